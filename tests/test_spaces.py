"""Contract of every search space in SPACES: one line in conftest.TINY_SPACES covers a new space."""

import random

import pytest
import torch

from raysearch.spaces import SPACES, DataShape
from tests.conftest import TINY_SPACES, tiny_space

DATA = DataShape(1, 8, 10)


def test_every_space_has_tiny_options():
    assert set(TINY_SPACES) == set(SPACES)


def _random_weights(space, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen).softmax(-1) for name, shape in space.encoding_shapes().items()}


def _edges_by_row(net):
    return {(name, row): ops for name, row, ops in net.edges()}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_supernet_and_derived_network_shapes(name):
    space = tiny_space(name, DATA)
    x = torch.randn(3, 1, 8, 8)
    net = space.supernet()
    assert net(x, _random_weights(space)).shape == (3, 10)
    assert space.network(space.derive(_random_weights(space)))(x).shape == (3, 10)
    # every row of every encoding is an edge of the supernet, with one candidate per op
    rows = {(n, r) for n, shape in space.encoding_shapes().items() for r in range(shape[0])}
    assert set(_edges_by_row(net)) == rows
    assert all(len(ops) == space.encoding_shapes()[n][1] for n, _, ops in net.edges())


@pytest.mark.parametrize("name", sorted(SPACES))
def test_a_functional_call_on_the_supernet_leaves_its_parameters_in_place(name):
    """AutoHAS and second-order DARTS evaluate the supernet at other weights with torch.func.functional_call,
    which leaves a module registered under several parents with plain tensors swapped in."""
    space = tiny_space(name, DATA)
    net = space.supernet()
    assert len(list(net.named_parameters(remove_duplicate=False))) == len(list(net.parameters()))
    values = {n: p.detach() + 1 for n, p in net.named_parameters()}
    torch.func.functional_call(net, values, (torch.randn(3, 1, 8, 8), _random_weights(space)))
    assert all(type(p) is torch.nn.Parameter for p in net.parameters())


@pytest.mark.parametrize("name", sorted(SPACES))
def test_genotype_strings_and_choices_round_trip(name):
    space = tiny_space(name)
    rng = random.Random(0)
    for seed in range(20):
        genotype = space.derive(_random_weights(space, seed))
        assert not set(space.excluded_ops) & set(space.to_choices(genotype).values())
        assert space.parse(genotype.to_string()) == genotype
        assert space.parse(genotype.to_string()).to_string() == genotype.to_string()
        assert space.to_choices(space.from_choices(space.to_choices(genotype))) == space.to_choices(genotype)
        sampled = {key: rng.choice(values) for key, values in space.choices().items()}
        assert space.to_choices(space.from_choices(sampled)) == sampled
        # the derived weights of a genotype derive it back (up to the order of a cell's entries)
        assert space.to_choices(space.derive(space.derived_weights(genotype))) == space.to_choices(genotype)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_hard_sample_computes_one_op_per_edge_and_equals_the_mixture(name):
    """GDAS/AutoHAS's forward: with one-hot weights and the active op per row, only that op runs."""
    space = tiny_space(name, DATA)
    net = space.supernet()
    gen = torch.Generator().manual_seed(0)
    active = {n: torch.randint(0, shape[1], (shape[0],), generator=gen) for n, shape in space.encoding_shapes().items()}
    one_hot = {n: torch.nn.functional.one_hot(a, space.encoding_shapes()[n][1]).float() for n, a in active.items()}
    x = torch.randn(2, 1, 8, 8)
    calls = []
    for enc, row, ops in net.edges():
        for j, op in enumerate(ops):
            op.register_forward_hook(lambda m, i, o, key=(enc, row, j): calls.append(key))
    hard = net(x, one_hot, active)
    edges = len(list(net.edges()))
    assert len(calls) == edges  # exactly one op per edge
    assert all(int(active[enc][row]) == j for enc, row, j in calls)
    assert torch.allclose(hard, net(x, one_hot), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_unsampled_weights_still_get_gradients(name):
    space = tiny_space(name, DATA)
    gen = torch.Generator().manual_seed(0)
    shapes = space.encoding_shapes()
    active = {n: torch.randint(0, shape[1], (shape[0],), generator=gen) for n, shape in shapes.items()}
    weights = {n: torch.nn.functional.one_hot(a, shapes[n][1]).float().requires_grad_() for n, a in active.items()}
    logits = space.supernet()(torch.randn(4, 1, 8, 8), weights, active)
    (logits * torch.randn(logits.shape, generator=gen)).sum().backward()
    for n, w in weights.items():
        assert w.grad is not None and w.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", sorted(SPACES))
def test_unknown_op_in_a_string_is_rejected(name):
    from raysearch.spaces import GenotypeError

    space = tiny_space(name)
    text = space.derive(_random_weights(space)).to_string()
    op = next(o for o in space.op_names if o not in space.excluded_ops and o in text)
    with pytest.raises(GenotypeError):
        space.parse(text.replace(op, "conv_13x13", 1))
