"""The MBConv supernet: a block's six choices slice one set of weights, those of its largest choice."""

import pytest
import torch

from raysearch.spaces import DataShape, MBConvSpace, MBConvSpaceConfig
from raysearch.spaces.ops import MBCONV_OPS, InvertedResidual, mbconv_choice


@pytest.fixture
def supernet():
    torch.manual_seed(0)
    return MBConvSpace(MBConvSpaceConfig(0.3, 0.3), DataShape(1, 8, 10)).supernet()


def test_the_choices_of_a_block_own_no_weights(supernet):
    for _, _, edge in supernet.edges():
        assert all(not list(choice.parameters()) for choice in edge)
        assert len({id(choice.shared) for choice in edge}) == 1


@pytest.mark.parametrize("op", MBCONV_OPS)
@pytest.mark.parametrize("row", [1, 3])  # a strided block that widens (8 -> 16), a residual one (24 -> 24)
def test_a_choice_is_the_inverted_residual_with_the_centre_and_first_channels(supernet, op, row):
    kernel, expansion = mbconv_choice(op)
    choice = supernet.blocks[row][MBCONV_OPS.index(op)]
    shared = choice.shared
    c_in, c_out = shared.expand.in_channels, shared.project.out_channels
    reference = InvertedResidual(c_in, c_out, kernel, shared.stride, expansion, affine=False, track=False)
    hidden, crop = c_in * expansion, (7 - kernel) // 2
    convs = [m for m in reference.body if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[0].weight.copy_(shared.expand.weight[:hidden])
        convs[1].weight.copy_(shared.depthwise.weight[:hidden, :, crop:crop + kernel, crop:crop + kernel])
        convs[2].weight.copy_(shared.project.weight[:, :hidden])
    x = torch.randn(4, c_in, 8, 8)
    assert reference.residual == shared.residual
    assert torch.allclose(choice(x), reference(x), atol=1e-5)
