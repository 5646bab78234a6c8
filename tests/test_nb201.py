import json

import pytest
import torch

from raysearch.spaces import SPACES, DataShape
from raysearch.spaces.ops import OPS
from raysearch.spaces.nb201 import GenotypeError, NB201Genotype

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_string_round_trip_for_every_architecture():
    seen = set()
    for genotype in NB201Genotype.all():
        text = genotype.to_string()
        assert NB201Genotype.from_string(text) == genotype
        assert NB201Genotype.from_indices(genotype.indices) == genotype
        seen.add(text)
    assert len(seen) == 5**6


def test_example_string_is_exact():
    genotype = NB201Genotype.from_string(EXAMPLE)
    assert genotype.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3",
                            "skip_connect")
    assert genotype.to_string() == EXAMPLE


def test_json_round_trip():
    genotype = NB201Genotype.from_string(EXAMPLE)
    assert json.loads(genotype.to_json()) == {"space": "nb201", "arch": EXAMPLE}
    assert NB201Genotype.from_json(genotype.to_json()) == genotype


@pytest.mark.parametrize("text, fragment", [
    ("", "3 nodes"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 nodes"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "wrapped"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "takes 2 inputs"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "'op~0'"),
    ("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|__import__('os')~2|", "'op~2'"),
])
def test_malformed_strings_are_rejected(text, fragment):
    with pytest.raises(GenotypeError, match=fragment.replace("(", r"\(")):
        NB201Genotype.from_string(text)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("c_in, c_out, stride", [(4, 4, 1), (4, 4, 2), (4, 8, 2), (4, 8, 1)])
def test_every_op_gives_the_output_shape(name, c_in, c_out, stride):
    out = OPS[name](c_in, c_out, stride, True, True)(torch.randn(2, c_in, 8, 8))
    assert out.shape == (2, c_out, 8 // stride, 8 // stride)
    if name == "none":
        assert not out.any()


def _space(stages=1, cells=1):
    return SPACES["nb201"](channels=4, cells_per_stage=cells, stages=stages, data=DataShape(1, 8, 10))


@pytest.mark.parametrize("stages", [1, 3])
def test_fixed_network_and_supernet_shapes(stages):
    space = _space(stages)
    x = torch.randn(3, 1, 8, 8)
    assert space.network(NB201Genotype.from_string(EXAMPLE))(x).shape == (3, 10)
    weights = torch.softmax(torch.randn(space.encoding_shape), -1)
    assert space.supernet()(x, weights).shape == (3, 10)


def test_hard_sampled_supernet_equals_the_mixture_and_runs_one_op_per_edge():
    """With a one-hot sample, the supernet computes only the sampled op of each edge, same output."""
    space = _space()
    net = space.supernet()
    x = torch.randn(2, 1, 8, 8)
    active = torch.tensor([3, 2, 1, 4, 0, 3])
    one_hot = torch.nn.functional.one_hot(active, 5).float()
    assert torch.allclose(net(x, one_hot, active), net(x, one_hot), atol=1e-6)
    calls = []
    for cell in [b for b in net.blocks if hasattr(b, "edges")]:
        for k, edge in enumerate(cell.edges):
            for j, op in enumerate(edge):
                op.register_forward_hook(lambda m, i, o, key=(k, j): calls.append(key))
    net(x, one_hot.requires_grad_(), active)
    assert sorted(set(calls)) == sorted((k, int(a)) for k, a in enumerate(active))


def test_unsampled_weights_still_get_gradients():
    # Two cells: the last cell's node 3 feeds non-affine BN, which cancels a constant shift.
    space = _space(cells=2)
    active = torch.tensor([3, 2, 1, 4, 0, 3])
    weights = torch.nn.functional.one_hot(active, 5).float().requires_grad_()
    space.supernet()(torch.randn(2, 1, 8, 8), weights, active).sum().backward()
    unselected = torch.ones(6, 5, dtype=torch.bool)
    unselected[torch.arange(6), active] = False
    assert (weights.grad[unselected] != 0).all()
