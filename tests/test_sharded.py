"""Contract of every algorithm in ALGORITHMS sharded over 2 gloo processes (torch.multiprocessing, no Ray).

Both ranks must hold the same encodings, weights and derived genotype, and
draw the same samples at every step; with synchronized batch norm the
2-worker search must match a 1-worker search of the same global batch. A new
algorithm is covered by its registry line; CASES adds the variants that take
other code paths (second order, progressive stages, perturbation selection).
"""

from __future__ import annotations


import pytest
import torch
import torch.multiprocessing as mp

from raysearch.algorithms import ALGORITHMS
from raysearch.config import from_dict
from raysearch.data.splits import Splits
from raysearch.distributed import LOCAL, SyncBatchNorm2d, TorchDistributed
from raysearch.search import SearchLoop
from raysearch.spaces import DataShape
from tests.conftest import TINY, space_for
from tests.helpers import free_port

BATCH, EPOCHS = 16, 2
CASES = {
    **{name: (name, {}) for name in sorted(ALGORITHMS)},
    "darts_order2": ("darts", {"order": 2}),
    "darts_es_measured": ("darts_es", {"es_interval": 1}),
    "drnas_progressive": ("drnas", {"progressive": True, "warmup_epochs": 0}),
    "darts_perturbation": ("darts", {"selection": "perturbation", "tune_epochs": 1}),
    "autohas_perturbation": ("autohas", {"selection": "perturbation", "tune_epochs": 1}),
}
# where the algorithms draw their samples
SAMPLERS = ("mix", "weight_mix", "relaxed_arch", "_sample_arch", "_sample_hparams", "_sample_augmentation")
RESUMED = "gdas"  # the case also checkpointed by the 2 workers and resumed by 1


def _config(case: str, batch_norm: str = "synchronized"):
    algorithm, options = CASES[case]
    return from_dict({**TINY, "space": space_for(algorithm),
                      "search": {"algorithm": algorithm, "epochs": EPOCHS, "batch_size": BATCH, **options},
                      "ray": {"workers": 2, "batch_norm": batch_norm}})


def _splits() -> Splits:
    from raysearch.config import DataConfig
    from raysearch.data import load_splits

    full = load_splits(DataConfig(val_fraction=0.25))
    return Splits((full.train[0][:64], full.train[1][:64]), (full.val[0][:48], full.val[1][:48]), full.test,
                  DataShape(1, 8, 10))


def _detached(value):
    """A sampler's output (mixing weights, active ops) as plain values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_detached(v) for v in value]
    return value


def _record_draws(algorithm, draws: list) -> None:
    """Record every sampler's output; an algorithm made of `stages` (Sequential DHA) records its stages'."""
    for stage in getattr(algorithm, "stages", ()):
        _record_draws(stage, draws)
    if hasattr(algorithm, "stages"):
        return
    for name in SAMPLERS:
        if hasattr(algorithm, name):
            method = getattr(algorithm, name)

            def recorded(*args, _method=method, _name=name, **kwargs):
                out = _method(*args, **kwargs)
                draws.append((algorithm.steps, _name, _detached(out)))
                return out

            setattr(algorithm, name, recorded)


def _search(case: str, dist, epochs=None, state=None, batch_norm="synchronized") -> dict:
    """Run a case to its end (or `epochs` epochs) under `dist`; what the ranks must agree on."""
    config = _config(case, batch_norm)
    loop = SearchLoop.from_config(config, _splits(), dist=dist)
    if state is not None:
        loop.load_state_dict(state)
    draws, metrics = [], []
    _record_draws(loop.algorithm, draws)
    while not loop.done and (epochs is None or loop.epoch < epochs):
        metrics.append(loop.run_epoch())
    return {"encodings": loop.algorithm.encodings(), "genotype": loop.algorithm.derive().genotype.to_string(),
            "weights": {k: v.clone() for k, v in loop.algorithm.net.state_dict().items()}, "draws": draws,
            "metrics": metrics, "state": loop.state_dict(), "collectives": dist.collectives,
            "sync_bn": any(isinstance(m, SyncBatchNorm2d) for m in loop.algorithm.net.modules())}


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {case: _search(case, TorchDistributed("synchronized")) for case in CASES}
        results["per_shard"] = _search(RESUMED, TorchDistributed("per_shard"), batch_norm="per_shard")
        results["half"] = _search(RESUMED, TorchDistributed("synchronized"), epochs=1)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Every case run once by two gloo ranks: [rank 0 results, rank 1 results]."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def single():
    """Every case in one process with the same global batch."""
    return {case: _search(case, LOCAL) for case in CASES}


def _same(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            torch.testing.assert_close(a[key], b[key], **tolerance, msg=lambda m, k=key: f"{k}: {m}")
        else:
            assert torch.equal(a[key], b[key]), f"{key} differs between the ranks"


def _same_draws(a: list, b: list, **tolerance) -> None:
    """Every step drew the same samples: equal active ops; mixing weights equal (or close, `tolerance`)."""
    assert [(step, name) for step, name, _ in a] == [(step, name) for step, name, _ in b]
    for (step, name, x), (_, _, y) in zip(a, b):
        if tolerance:
            torch.testing.assert_close(x, y, **tolerance, msg=lambda m: f"step {step} {name}: {m}")
        else:
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=lambda m: f"step {step} {name}: {m}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_ranks_agree_exactly_at_every_step(case, ranks):
    r0, r1 = ranks[0][case], ranks[1][case]
    assert r0["sync_bn"] and r0["collectives"] > 0
    assert r0["draws"], "no sample was recorded"
    _same_draws(r0["draws"], r1["draws"])
    assert r0["genotype"] == r1["genotype"]
    _same(r0["encodings"], r1["encodings"])
    _same(r0["weights"], r1["weights"])
    assert r0["metrics"] == r1["metrics"], "epoch metrics are not global"


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_match_one_worker_with_the_same_global_batch(case, ranks, single):
    sharded, alone = ranks[0][case], single[case]
    _same_draws(sharded["draws"], alone["draws"], rtol=1e-4, atol=1e-5)
    assert sharded["genotype"] == alone["genotype"]
    _same(sharded["encodings"], alone["encodings"], rtol=1e-4, atol=1e-5)
    _same(sharded["weights"], alone["weights"], rtol=1e-3, atol=1e-4)
    assert len(sharded["metrics"]) == len(alone["metrics"])
    for got, want in zip(sharded["metrics"], alone["metrics"]):
        assert got.keys() == want.keys()
        assert got["derived_val_acc"] == want["derived_val_acc"]
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key


def test_per_shard_batch_norm_keeps_the_ranks_identical(ranks):
    r0, r1 = ranks[0]["per_shard"], ranks[1]["per_shard"]
    assert not r0["sync_bn"]
    _same_draws(r0["draws"], r1["draws"])
    assert r0["genotype"] == r1["genotype"]
    _same(r0["weights"], r1["weights"])


def test_a_two_worker_checkpoint_resumes_in_one_worker(ranks, single):
    """The checkpoint holds no rank state: a search stopped on 2 workers finishes on 1 like an undisturbed one."""
    resumed = _search(RESUMED, LOCAL, state=ranks[0]["half"]["state"])
    assert ranks[0]["half"]["state"]["train"] == ranks[1]["half"]["state"]["train"]
    alone = single[RESUMED]
    assert resumed["genotype"] == alone["genotype"]
    _same(resumed["encodings"], alone["encodings"], rtol=1e-4, atol=1e-5)
    assert resumed["state"]["epoch"] == alone["state"]["epoch"] == EPOCHS


def test_a_sharded_stream_splits_each_global_batch():
    from raysearch.data import BatchStream

    x, y = torch.arange(40).float().view(40, 1), torch.arange(40)
    whole = BatchStream(x, y, 8, seed=3)
    halves = [BatchStream(x, y, 8, seed=3, shard=(r, 2)) for r in range(2)]
    for _ in range(7):
        _, labels = next(whole)
        assert torch.equal(torch.cat([next(h)[1] for h in halves]), labels)
    with pytest.raises(ValueError, match="split evenly"):
        BatchStream(x, y, 9, seed=3, shard=(0, 2))
