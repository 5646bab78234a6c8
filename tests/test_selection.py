"""Perturbation-based selection (DARTS-PT) on top of a supernet search, in a plain loop."""

import dataclasses
import io

import pytest
import torch

from raysearch.algorithms.selection import plan
from raysearch.search import SearchLoop, planned_epochs
from raysearch.config import from_dict
from tests.conftest import TINY


def _config(space=None, **search):
    return from_dict({**TINY, "space": space or TINY["space"],
                      "search": {"algorithm": "darts", "epochs": 1, "batch_size": 64, "selection": "perturbation",
                                 "tune_epochs": 1, **search}})


def _loop(config, digits):
    return SearchLoop.from_config(config, digits)


SELECTABLE = ("darts", "gdas", "drnas", "autohas")  # the relaxations perturbation reads as mixtures


@pytest.mark.parametrize("algorithm", SELECTABLE)
def test_every_edge_is_decided_then_the_loop_is_done(digits, algorithm):
    config = _config(algorithm=algorithm)
    loop = _loop(config, digits)
    assert planned_epochs(config) == 1 + 6
    epochs = 0
    while not loop.done:
        metrics = loop.run_epoch()
        epochs += 1
        if epochs > 1:
            assert metrics["decided"] == epochs - 1 and 0.0 <= metrics["selection_val_acc"] <= 1.0
    assert epochs == 7
    selection = loop.algorithm.selection
    assert all(f.all() for f in selection.fixed.values())
    weights = loop.algorithm.selected_weights()["cell"]
    assert torch.equal(weights.sum(-1), torch.ones(6)) and set(weights.unique().tolist()) == {0.0, 1.0}
    assert loop.algorithm.derive().genotype.indices == tuple(weights.argmax(-1).tolist())


def test_the_op_whose_removal_hurts_most_is_kept(digits, monkeypatch):
    loop = _loop(_config(), digits)
    loop.run_epoch()
    selection = loop.algorithm.selection
    importance = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.2])  # nor_conv_1x1 matters most

    def fake_accuracy(weights, val):
        current = selection.weights(loop.algorithm.probabilities())["cell"]
        zeroed = (weights["cell"] != current).nonzero()
        return 1.0 if len(zeroed) == 0 else 1.0 - importance[zeroed[0, 1]].item()

    monkeypatch.setattr(selection, "_accuracy", fake_accuracy)
    loop.run_epoch()
    ((_, (name, row)),) = plan(loop.algorithm.space, 0)[0]  # NB201: one encoding, one decision a round
    assert selection.override[name][row].argmax().item() == 2


def test_darts_topology_keeps_two_inputs_per_node(digits):
    config = _config(space={"name": "darts", "channels": 4, "layers": 3, "stem_multiplier": 1})
    small = dataclasses.replace(digits, train=tuple(t[:128] for t in digits.train),
                                val=tuple(t[:128] for t in digits.val))  # the DARTS supernet is the slow one
    loop = _loop(config, small)
    selection = loop.algorithm.selection
    selection.plan = [r for r in selection.plan if r[0][0] == "node"]  # ops stay soft
    # nodes 3, 4, 5 of each cell type choose 2 of 3, 4, 5 inputs: a normal and a reduction node per round
    assert [sorted(name for _, (name, *_) in r) for r in selection.plan] == [["normal", "reduce"]] * 3
    while not loop.done:
        loop.run_epoch()
    weights = loop.algorithm.selected_weights()
    for name, rows, keep in loop.algorithm.space.node_groups():
        assert sum(int(weights[name][r].sum() > 0) for r in rows) == keep
    genotype = loop.algorithm.derive().genotype
    kept = {(name, r) for name, rows, _ in loop.algorithm.space.node_groups() for r in rows
            if weights[name][r].sum() > 0}
    from raysearch.spaces.darts import EDGES, NODES
    for cell in ("normal", "reduce"):
        pairs = getattr(genotype, cell)
        assert {(cell, EDGES.index((NODES[k // 2], src))) for k, (_, src) in enumerate(pairs)} == \
            {k for k in kept if k[0] == cell}


@pytest.mark.parametrize("algorithm", ("darts", "autohas"))
def test_resume_mid_selection_continues_identically(digits, algorithm):
    config = _config(algorithm=algorithm)
    a = _loop(config, digits)
    for _ in range(3):
        a.run_epoch()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = [a.run_epoch() for _ in range(2)]
    b = _loop(config, digits)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert [b.run_epoch() for _ in range(2)] == expected
    assert b.algorithm.derive().genotype == a.algorithm.derive().genotype


def test_selection_is_a_checked_option():
    from raysearch.config import ConfigError

    with pytest.raises(ConfigError, match="search.selection"):
        _config(selection="sideways")
    with pytest.raises(ConfigError, match="search.selection: perturbation selects an architecture"):
        _config(algorithm="autohas", search_arch=False, genotype="|nor_conv_3x3~0|+|none~0|none~1|+"
                                                                 "|none~0|none~1|none~2|")


def test_autohas_tuning_steps_the_mixture_with_the_derived_optimizer_from_a_fresh_state(digits, monkeypatch):
    """Selection on an AutoHAS supernet: the weights train on the mixture (every op gets a gradient) with
    the derived weight decay, from tune_lr_factor x the derived peak lr, with momentum started afresh;
    the architecture encodings learn, the HP encodings stay as the search left them."""
    loop = _loop(_config(algorithm="autohas", tune_epochs=2), digits)
    loop.run_epoch()  # the search epoch
    algorithm = loop.algorithm
    assert any(b.abs().sum() > 0 for b in algorithm.rules[0].buffers)  # the search left momentum
    steps = []
    original = algorithm._weight_step
    monkeypatch.setattr(algorithm, "_weight_step", lambda grads, chosen, lr, wd, parts=None: steps.append(
        (lr, wd, [b.clone() for b in algorithm.rules[0].buffers], grads)) or original(grads, chosen, lr, wd, parts))
    hparams = {n: algorithm.enc[n].detach().clone() for n in ("lr", "wd")}
    cell = algorithm.enc["cell"].detach().clone()
    lr_factor, wd, _ = algorithm._derived_hparams()
    loop.run_epoch()  # round 1, then a tuning epoch
    first_lr, first_wd, buffers, grads = steps[0]
    assert first_lr == pytest.approx(0.1 * algorithm.training.lr * lr_factor) and first_wd == pytest.approx(wd)
    assert all(b.abs().sum() == 0 for b in buffers)  # a fresh optimizer
    trained = sum(int(g.abs().sum() > 0) for g in grads if g.dim() == 4)
    arch_w, active = algorithm._sample_arch()
    sampled = algorithm._training_gradients(*next(loop.train), arch_w, active)[2]
    assert trained > sum(int(g.abs().sum() > 0) for g in sampled if g.dim() == 4)  # the mixture, not a sample
    undecided = ~algorithm.selection.fixed["cell"]
    assert not torch.allclose(algorithm.enc["cell"][undecided], cell[undecided])
    assert all(torch.equal(algorithm.enc[n], hparams[n]) for n in hparams)


def test_darts_rounds_decide_a_normal_and_a_reduction_edge_together():
    """As the reference's projection: 14 op rounds and 3 node rounds (nodes 3, 4, 5), each one edge or node
    of either cell type; the last round ends the selection: (17 - 1) x tune_epochs + 1 epochs (170 before)."""
    from raysearch.algorithms.selection import selection_epochs
    from raysearch.spaces import build_space

    config = _config(space={"name": "darts", "channels": 4, "layers": 3, "stem_multiplier": 1}, tune_epochs=5)
    rounds = plan(build_space(config.space), 0)
    assert [kind for kind, _ in (r[0] for r in rounds)] == ["op"] * 14 + ["node"] * 3
    assert all(sorted(item[0] for _, item in r) == ["normal", "reduce"] for r in rounds)
    assert selection_epochs(build_space(config.space), config.search.options) == 16 * 5 + 1
    assert planned_epochs(config) == 1 + 81


def test_tuning_trains_undecided_encodings_and_anneals_the_weight_lr_from_lr_over_10(digits, monkeypatch):
    config = _config(tune_epochs=2)
    loop = _loop(config, digits)
    loop.run_epoch()  # the search epoch
    algorithm, selection = loop.algorithm, loop.algorithm.selection
    lrs = []
    step = algorithm.weight_step
    monkeypatch.setattr(algorithm, "weight_step", lambda batch, mix=None, lr=None: lrs.append(lr) or step(batch, mix, lr))
    momentum = [s["momentum_buffer"].clone() for s in algorithm.weight_optimizer.state.values()]
    assert momentum  # the search's weight steps left momentum, which tuning must not inherit
    before = algorithm.alpha["cell"].detach().clone()
    loop.run_epoch()  # round 1, then a tuning epoch
    undecided = ~selection.fixed["cell"]
    assert undecided.sum() == 5 and not torch.allclose(algorithm.alpha["cell"][undecided], before[undecided])
    base = algorithm.options.weight_lr
    assert lrs[0] == pytest.approx(0.1 * base) and all(a > b for a, b in zip(lrs, lrs[1:]))
    while not loop.done:
        count = len(lrs)
        loop.run_epoch()
    assert len(lrs) == count  # the last epoch decides the last round and tunes nothing
    assert lrs[-1] >= algorithm.options.weight_lr_min and loop.epoch == 1 + (6 - 1) * 2 + 1


@pytest.mark.parametrize("algorithm,prefix", [("gdas", "arch"), ("autohas", "encoding")])
def test_tuning_steps_the_encodings_at_their_lr_after_a_cosine_schedule_ran_it_down(digits, algorithm, prefix):
    config = _config(algorithm=algorithm, epochs=2, **{f"{prefix}_lr": 0.01, f"{prefix}_lr_schedule": "cosine"})
    loop = _loop(config, digits)
    loop.run_epoch()
    loop.run_epoch()  # the search epochs: the schedule ends near 0
    optimizer = loop.algorithm.encoding_optimizer
    assert optimizer.param_groups[0]["lr"] < 0.01 / 10
    loop.run_epoch()  # round 1, then a tuning epoch
    assert optimizer.param_groups[0]["lr"] == 0.01
