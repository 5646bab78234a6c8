"""DARTS-ES: the Hessian eigenvalue, the stopping rule, and a search that stops early."""

import pytest
import torch

import raysearch.algorithms.darts_es as darts_es
from raysearch.algorithms.darts_es import dominant_eigenvalue, stop_index
from raysearch.config import from_dict
from raysearch.search import SearchLoop
from tests.conftest import TINY


def test_power_iteration_finds_the_eigenvalue_of_largest_magnitude():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    hessian = q @ torch.diag(torch.tensor([5.0, -2.0, 1.0, 0.5, 0.1, -0.3])) @ q.T
    x = torch.randn(3, 2, generator=gen, requires_grad=True)  # two parameters, shapes [3, 2] flattened
    y = torch.randn(6, generator=gen, requires_grad=False)
    flat = lambda: x.reshape(-1)  # noqa: E731
    loss = 0.5 * flat() @ hessian @ flat() + y @ flat()
    assert dominant_eigenvalue(loss, [x], 50, torch.Generator().manual_seed(1)) == pytest.approx(5.0, rel=1e-4)


@pytest.mark.parametrize("values, expected", [
    ([1.0] * 10, None),  # flat curvature
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0, 5.0, 6.0], 5),  # grows: back to 4 measurements earlier
    ([1.0, 1.0, 1.0, 3.0, 4.0], None),  # the earlier measurement is before es_min_epoch
])
def test_stop_rule(values, expected):
    epochs = [2 * (i + 1) for i in range(len(values))]
    assert stop_index(values, epochs, window=5, lookback=4, threshold=1.3, min_epoch=10) == expected


def test_a_search_whose_curvature_grows_stops_and_returns_the_earlier_encodings(digits, monkeypatch):
    values = iter([1.0, 1.0, 5.0])
    monkeypatch.setattr(darts_es, "dominant_eigenvalue", lambda *a, **k: next(values))
    config = from_dict({**TINY, "search": {"algorithm": "darts_es", "epochs": 8, "batch_size": 64,
                                           "es_interval": 1, "es_window": 1, "es_lookback": 2, "es_min_epoch": 1,
                                           "arch_lr": 0.05}})
    loop = SearchLoop.from_config(config, digits)
    snapshots = []
    while not loop.done:
        metrics = loop.run_epoch()
        snapshots.append({k: a.detach().clone() for k, a in loop.algorithm.alpha.items()})
    assert loop.epoch == 3 and metrics["stopped_at_epoch"] == 1.0
    assert torch.equal(loop.algorithm.alpha["cell"], snapshots[0]["cell"])  # the encodings of epoch 1


def test_the_eigenvalue_of_a_real_supernet_is_measured(digits):
    config = from_dict({**TINY, "search": {"algorithm": "darts_es", "epochs": 2, "batch_size": 64,
                                           "es_interval": 1, "power_iterations": 5}})
    loop = SearchLoop.from_config(config, digits)
    metrics = loop.run_epoch()
    assert metrics["hessian_eigenvalue"] != 0.0 and metrics["hessian_eigenvalue"] == metrics["hessian_eigenvalue"]
