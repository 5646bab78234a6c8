"""Contract of every differentiable search in ALGORITHMS, on every space in SPACES, in a plain loop on CPU.

A new algorithm or space is covered by its registry line (and a line in conftest.TINY_SPACES).
"""

import io
import itertools

import pytest
import torch

from raysearch.algorithms import ALGORITHMS
from raysearch.config import TrainingConfig
from raysearch.spaces import SPACES, DataShape
from raysearch.training import DivergenceError
from tests.conftest import tiny_space

PAIRS = list(itertools.product(sorted(ALGORITHMS), sorted(SPACES)))
BATCH = 8


def _algorithm(name, space_name, seed=0, **options):
    entry = ALGORITHMS[name]
    space = tiny_space(space_name, DataShape(1, 8, 10))
    return entry.build(space, entry.config_type(**options), TrainingConfig(), total_steps=8, seed=seed,
                       steps_per_epoch=2)


def _batches(digits, count, start=0):
    x, y = digits.train
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(start, start + count)]


def _run(algo, digits, start, count=2):
    batches = _batches(digits, 2 * count, 2 * start)
    return [algo.step(batches[2 * i], batches[2 * i + 1]) for i in range(count)]


def _snapshot(algo):
    return {k: v.clone() for k, v in algo.encodings().items()}, [p.detach().clone() for p in algo.net.parameters()]


@pytest.mark.parametrize("name, space_name", PAIRS)
def test_steps_run_and_derive_a_valid_genotype(name, space_name, digits):
    algo = _algorithm(name, space_name)
    for metrics in _run(algo, digits, 0):
        assert all(isinstance(v, float) for v in metrics.values())
        assert {"train_loss", "val_loss", "val_acc"} <= set(metrics)
    result = algo.derive()
    space = algo.space
    assert space.parse(result.genotype.to_string()) == result.genotype
    assert not set(space.excluded_ops) & set(space.to_choices(result.genotype).values())
    assert space.network(result.genotype)(_batches(digits, 1)[0][0]).shape == (BATCH, 10)
    assert algo.derived_logits(_batches(digits, 1)[0][0]).shape == (BATCH, 10)
    assert {"lr", "weight_decay"} <= set(result.hparams)
    labels = algo.encoding_labels()
    for key, probs in algo.encodings().items():
        rows, ops = labels[key]
        assert probs.shape == ((len(rows), len(ops)) if rows else (len(ops),))
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("name, space_name", PAIRS)
def test_state_dict_round_trip_continues_identically(name, space_name, digits):
    a = _algorithm(name, space_name)
    _run(a, digits, 0)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = _run(a, digits, 2)
    b = _algorithm(name, space_name)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert _run(b, digits, 2) == expected
    (enc_a, w_a), (enc_b, w_b) = _snapshot(a), _snapshot(b)
    assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)
    assert all(torch.equal(p, q) for p, q in zip(w_a, w_b))
    assert a.derive().genotype == b.derive().genotype


@pytest.mark.parametrize("name, space_name", PAIRS)
def test_encodings_change_only_in_their_own_optimizer_step(name, space_name, digits, monkeypatch):
    algo = _algorithm(name, space_name)
    before_enc, before_w = _snapshot(algo)
    monkeypatch.setattr(algo.encoding_optimizer, "step", lambda *a, **k: None)
    _run(algo, digits, 0)
    after_enc, after_w = _snapshot(algo)
    assert all(torch.equal(before_enc[k], after_enc[k]) for k in before_enc), "encodings moved outside their step"
    assert any(not torch.equal(p, q) for p, q in zip(before_w, after_w)), "the weights did not train"
    monkeypatch.undo()
    _run(algo, digits, 2)
    moved = _snapshot(algo)[0]
    assert all(not torch.equal(after_enc[k], moved[k]) for k in after_enc), "an encoding never moved"


@pytest.mark.parametrize("name, space_name", PAIRS)
def test_a_nan_loss_raises_a_clear_error(name, space_name, digits):
    algo = _algorithm(name, space_name)
    (x, y), val = _batches(digits, 2)
    with pytest.raises(DivergenceError, match="NaN|nan|diverged"):
        algo.step((torch.full_like(x, float("nan")), y), (torch.full_like(val[0], float("nan")), val[1]))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_seed_is_used(name, digits):
    runs = [_run(_algorithm(name, "nb201", seed=seed), digits, 0) for seed in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]



def _step_lrs(algo, digits, steps: int, base: float) -> list[float]:
    """The weight lr each of `steps` steps used (AutoHAS: its record divided by the step's lr factor; DHA,
    whose peak lr is searched: `base` x the schedule's factor it reports)."""
    used = []
    for i in range(steps):
        metrics = _run(algo, digits, i, count=1)[0]
        if hasattr(algo, "weight_optimizer"):
            used.append(algo.weight_optimizer.param_groups[0]["lr"])
        elif "lr_scale" in metrics:
            used.append(base * metrics["lr_scale"])
    return used or [lr / f for lr, f in zip(algo.derive().hparams["lr"], algo.lr_factors)]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_warmup_epochs_ramp_the_weight_lr_then_the_schedule_runs(name, digits):
    """`training.warmup_epochs: 1` at 2 steps an epoch: lr/2, lr, then the cosine from lr over the 6 steps
    left (AutoHAS's recipe warms up 5 epochs, then cosine). DHA's lr is constant while it searches and
    follows the schedule once its cell is fixed: here a fixed cell, trained from the first step."""
    entry = ALGORITHMS[name]
    options = {"search_arch": False, "genotype": "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+"
                                                 "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"} if name == "dha" else {}
    algo = entry.build(tiny_space("nb201", DataShape(1, 8, 10)), entry.config_type(**options),
                       TrainingConfig(warmup_epochs=1), total_steps=8, seed=0, steps_per_epoch=2)
    base = getattr(algo.options, "weight_lr", TrainingConfig().lr)
    lrs = _step_lrs(algo, digits, 4, base)
    assert lrs[:3] == pytest.approx([base / 2, base, base]) and lrs[3] < base


def test_warmup_epochs_ramp_the_retraining_lr(digits):
    from raysearch.retrain import TrainLoop

    space = tiny_space("nb201", digits.shape)
    network = space.network(space.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"))
    loop = TrainLoop(network, digits.train, {}, TrainingConfig(warmup_epochs=2), 0.1, 5e-4, epochs=4,
                     batch_size=64, seed=0)
    per_epoch = loop.stream.batches_per_pass
    assert loop._lr(0) == pytest.approx(0.1 / (2 * per_epoch)) and loop._lr(per_epoch - 1) == pytest.approx(0.05)
    assert loop._lr(2 * per_epoch) == pytest.approx(0.1) and loop._lr(3 * per_epoch) == pytest.approx(0.05)
