"""Progressive DrNAS: partial channels, pruning and widening between two stages, warm-up, resume."""

import io
import math

import pytest
import torch

from raysearch.algorithms import ALGORITHMS
from raysearch.config import TrainingConfig
from raysearch.training import scheduled_lr
from raysearch.spaces import DataShape
from raysearch.spaces.mixed import Edge, channel_shuffle
from raysearch.spaces.ops import OPS
from tests.conftest import tiny_space

DATA = DataShape(1, 8, 10)


def _drnas(space_name="nb201", **options):
    entry = ALGORITHMS["drnas"]
    options = {"progressive": True, "warmup_epochs": 1, "partial_channels": (4, 2), **options}
    space = tiny_space(space_name, DATA) if space_name != "nb201" else _nb201()
    return entry.build(space, entry.config_type(**options), TrainingConfig(), total_steps=8, seed=0,
                       steps_per_epoch=2)


def _nb201():
    from raysearch.spaces import NB201Space, NB201SpaceConfig

    return NB201Space(NB201SpaceConfig(channels=8, cells_per_stage=1, stages=1), DATA)


def _batches(digits, start, count, size=16):
    x, y = digits.train
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(start, start + count)]


def _steps(algo, digits, start, count):
    batches = _batches(digits, 2 * start, 2 * count)
    return [algo.step(batches[2 * i], batches[2 * i + 1]) for i in range(count)]


@pytest.mark.parametrize("stride", [1, 2])
def test_a_partial_channel_edge_mixes_a_quarter_and_shuffles(stride):
    edge = Edge([OPS["nor_conv_3x3"](2, 2, stride, True, True)], partial=4, stride=stride)
    x = torch.randn(2, 8, 8, 8)
    out = edge.mix(x, None)
    assert out.shape == (2, 8, 8 // stride, 8 // stride)
    bypass = x[:, 2:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, 2:], 2, 2)
    unshuffled = channel_shuffle(out, 2)  # shuffling with the other factor undoes an 8-channel shuffle by 4
    assert torch.equal(unshuffled[:, 2:], bypass)


def test_two_stages_prune_widen_and_carry_the_optimizers(digits):
    algo = _drnas()
    assert all(len(edge) == 5 and edge[2][1].in_channels == 2 for _, _, edge in algo.net.edges())  # C/4
    before = {k: a.detach().clone() for k, a in algo.alpha.items()}
    _steps(algo, digits, 0, 2)  # epoch 1 of stage 1: warm-up, the encodings stay still
    assert all(torch.equal(before[k], a) for k, a in algo.alpha.items())
    _steps(algo, digits, 2, 2)
    assert not torch.equal(before["cell"], algo.alpha["cell"])
    metrics = _steps(algo, digits, 4, 1)[0]  # the first step of stage 2
    assert metrics["stage"] == 2.0 and algo.stage_start == 4
    for name, row, edge in algo.net.edges():
        assert len(edge.keep) == 3 and edge[2][1].in_channels == 4  # C/2
    probabilities = algo.probabilities()["cell"]
    assert ((probabilities > 0).sum(-1) == 3).all()
    # the reported entropy is of what the derivation reads: pruned ops count 0, so at most log(3) < log(5)
    assert 0 < metrics["arch_entropy"] <= math.log(3) + 1e-6
    assert algo.derive().genotype.indices == tuple(probabilities.argmax(-1).tolist())


def test_widening_copies_channels_and_momentum_and_keeps_both_schedules(digits):
    """The reference's transition: new channels copy existing ones (weights and momentum buffers through
    the same mapping), the weight lr goes on along one cosine, the encodings' Adam keeps its state."""
    algo = _drnas()
    _steps(algo, digits, 0, 4)  # the whole first stage
    conv = "blocks.0.edges.0.3.1.weight"  # nor_conv_3x3's conv on the first edge: [C/4, C/4, 3, 3]
    old = algo.net.get_parameter(conv).detach().clone()
    old_buffer = algo.weight_optimizer.state[algo.net.get_parameter(conv)]["momentum_buffer"].clone()
    adam_steps = {k: int(v["step"]) for k, v in enumerate(algo.encoding_optimizer.state.values())}
    algo._second_stage({"cell": torch.tensor([[1, 2, 3]] * 6)})
    new = algo.net.get_parameter(conv).detach()
    assert new.shape == (4, 4, 3, 3) and torch.equal(new[:2, :2], old)
    for i in range(4):  # every widened slice is a copy of an old one: Net2Wider's copy, no division
        for j in range(4):
            assert any(torch.equal(new[i, j], old[a, b]) for a in range(2) for b in range(2))
    buffer = algo.weight_optimizer.state[algo.net.get_parameter(conv)]["momentum_buffer"]
    assert torch.equal(buffer[:2, :2], old_buffer) and buffer.shape == new.shape
    assert adam_steps and {k: int(v["step"]) for k, v in enumerate(algo.encoding_optimizer.state.values())} == adam_steps
    lr = algo.weight_lr()  # one cosine over both stages: not back to the initial lr
    assert lr == pytest.approx(scheduled_lr(algo.options.weight_lr, 4, 8, "cosine", floor=algo.options.weight_lr_min))
    assert lr < algo.options.weight_lr


def test_perturbation_selection_decides_among_the_kept_ops_only(digits):
    algo = _drnas(selection="perturbation", tune_epochs=1)
    _steps(algo, digits, 0, 5)  # into the second stage
    scored = []
    algo.selection._accuracy = lambda weights, val: scored.append(weights) or 0.5
    val = _batches(digits, 0, 1)[0]
    for _ in range(6):  # the op of every row of the one NB201 cell
        algo.selection._decide(val)
    assert len(scored) == 6 * (3 + 1)  # 3 kept candidates per row, then the accuracy after the decision
    for row, kept in enumerate(algo.keep["cell"].tolist()):
        assert algo.selection.override["cell"][row].argmax().item() in kept


def test_pruned_ops_are_not_computed(digits):
    algo = _drnas()
    _steps(algo, digits, 0, 5)
    calls = set()
    for name, row, edge in algo.net.edges():
        for j, op in enumerate(edge):
            op.register_forward_hook(lambda m, i, o, key=(name, row, j): calls.add(key))
    algo.net(_batches(digits, 0, 1)[0][0], algo.mix()[0])
    expected = {(name, row, j) for name, row, edge in algo.net.edges() for j in edge.keep}
    assert calls == expected


def test_resume_in_the_second_stage_continues_identically(digits):
    a = _drnas()
    _steps(a, digits, 0, 5)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = _steps(a, digits, 5, 2)
    b = _drnas()
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert _steps(b, digits, 5, 2) == expected
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_progressive_runs_in_the_darts_space(digits):
    algo = _drnas("darts")
    _steps(algo, digits, 0, 5)
    genotype = algo.derive().genotype
    assert algo.space.parse(genotype.to_string()) == genotype


def test_mbconv_has_no_partial_channels():
    with pytest.raises(ValueError, match="cell space"):
        _drnas("mbconv")


@pytest.mark.parametrize("space, match", [
    ({"name": "nb201", "channels": 6}, "space.channels: 6 is not divisible"),
    ({"name": "mbconv"}, "need a cell space"),
])
def test_a_space_progressive_drnas_cannot_split_fails_when_the_config_loads(space, match):
    from raysearch.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=match):
        from_dict({"name": "t", "space": space, "search": {"algorithm": "drnas", "progressive": True}})
    from_dict({"name": "t", "space": space, "search": {"algorithm": "drnas"}})  # the one-stage search splits nothing


def test_the_reference_constants_are_each_space_s_defaults(digits):
    """DrNAS's train_search_progressive.py: NB201 4 -> 2 partial channels and 5 -> 3 ops; the DARTS space
    6 -> 4 and 7 -> 4 ops, `none` left out from the start (its PRIMITIVES have none), at 36 channels."""
    from raysearch.algorithms.drnas import DrNASConfig
    from raysearch.config import ConfigError, from_dict

    assert DrNASConfig().reference("nb201") == ((4, 2), 3, False)
    assert DrNASConfig().reference("darts") == ((6, 4), 4, True)
    assert DrNASConfig(partial_channels=(2, 1), keep_ops=2, drop_none=False).reference("darts") == ((2, 1), 2, False)
    with pytest.raises(ConfigError, match=r"space.channels: 16 is not divisible by search.partial_channels \[6, 4\] "
                                          r"\(the reference's for darts"):
        from_dict({"name": "t", "space": {"name": "darts"}, "search": {"algorithm": "drnas", "progressive": True}})
    from_dict({"name": "t", "space": {"name": "darts", "channels": 36},
               "search": {"algorithm": "drnas", "progressive": True}})
    algo = _drnas("darts", partial_channels=(4, 2))  # keep_ops and drop_none: the DARTS space's reference
    none = algo.space.encodings["normal"][1].index("none")
    assert all(none not in edge.keep and len(edge.keep) == 7 for _, _, edge in algo.net.edges())
    assert all((p[:, none] == 0).all() for p in algo.probabilities().values())
    _steps(algo, digits, 0, 5)  # into stage 2: 4 ops an edge, never `none`
    assert all(none not in edge.keep and len(edge.keep) == 4 for _, _, edge in algo.net.edges())
