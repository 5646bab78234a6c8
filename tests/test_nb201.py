import pytest
import torch

from raysearch.spaces import DataShape, GenotypeError, NB201SpaceConfig, NB201Genotype, NB201Space
from raysearch.spaces.ops import OPS

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


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (3, 5, 7, 9)])
def test_avg_pool_is_torch_pooling_without_the_padding_counted(stride, shape):
    """The table's avg_pool_3x3 is a box convolution over the in-bounds count (faster on CPU): the same
    values and gradients as nn.AvgPool2d(3, stride, 1, count_include_pad=False), at every border."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = OPS["avg_pool_3x3"](shape[1], shape[1], stride, False, False)(x)
    torch_pool = torch.nn.AvgPool2d(3, stride, 1, count_include_pad=False)(x)
    torch.testing.assert_close(ours, torch_pool)
    (ours_grad,), (torch_grad,) = (torch.autograd.grad((y * y).sum(), x) for y in (ours, torch_pool))
    torch.testing.assert_close(ours_grad, torch_grad)


def _space(stages=1, cells=1):
    return NB201Space(NB201SpaceConfig(channels=4, cells_per_stage=cells, stages=stages), DataShape(1, 8, 10))


@pytest.mark.parametrize("stages", [1, 3])
def test_fixed_network_and_supernet_shapes(stages):
    space = _space(stages)
    x = torch.randn(3, 1, 8, 8)
    assert space.network(NB201Genotype.from_string(EXAMPLE))(x).shape == (3, 10)
    weights = {"cell": torch.softmax(torch.randn(6, 5), -1)}
    assert space.supernet()(x, weights).shape == (3, 10)


def test_the_candidate_ops_are_an_explicit_option():
    from raysearch.config import ConfigError, from_dict
    from raysearch.spaces import build_space

    ops = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    config = from_dict({"name": "t", "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "stages": 1,
                                               "ops": list(ops)}})
    space = build_space(config.space, DataShape(1, 8, 10))
    assert space.encoding_shapes() == {"cell": (6, 4)} and space.op_names == ops
    weights = torch.zeros(6, 4)
    weights[:, 2] = 1.0  # the third candidate of this space is nor_conv_3x3, not nor_conv_1x1 as in all five
    assert space.derive({"cell": weights}).ops == ("nor_conv_3x3",) * 6
    assert all("none" not in choices for choices in space.choices().values())
    assert space.supernet()(torch.zeros(2, 1, 8, 8), {"cell": torch.full((6, 4), 0.25)}).shape == (2, 10)
    with pytest.raises(ConfigError, match="space.ops: distinct NB201 ops among none, skip_connect"):
        from_dict({"name": "t", "space": {"name": "nb201", "ops": ["none", "sep_conv_3x3"]}})
