"""The one table of candidate operations, keyed by the names genotypes use (NB201, DARTS, MBConv).

Each entry builds a module from (C_in, C_out, stride, affine, track_running_stats).
Search-time supernets pass affine=False, track_running_stats=False (batch
statistics only: the supernet's weights change shape of distribution every step,
so running averages would be stale); fixed networks use affine BN with stats.
"""

from __future__ import annotations

import torch
from torch import nn

from raysearch.registry import Registry


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True, track=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS)."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=True, track=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConvs without dilation, the first strided (DARTS's separable conv)."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True, track=True):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine, track),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine, track))


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion -> depthwise kxk (strided) -> 1x1 projection, BN after each, ReLU6
    after the first two; a residual connection when the shape is kept (MobileNetV2)."""

    def __init__(self, c_in, c_out, kernel, stride, expansion, affine=True, track=True):
        super().__init__()
        hidden = c_in * expansion
        bn = lambda c: nn.BatchNorm2d(c, affine=affine, track_running_stats=track)  # noqa: E731
        expand = [nn.Conv2d(c_in, hidden, 1, bias=False), bn(hidden), nn.ReLU6()] if expansion != 1 else []
        self.body = nn.Sequential(
            *expand,
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False), bn(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), bn(c_out),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (strided like the other ops)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        if self.c_out != x.shape[1]:
            x = x.new_zeros(x.shape[0], self.c_out, *x.shape[2:])
        return x.mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves resolution (or changes width) with two offset 1x1 convs."""

    def __init__(self, c_in, c_out, stride, affine=True, track=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        if stride == 1:
            self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 1, bias=False)])
        else:
            half = c_out // 2
            self.convs = nn.ModuleList(
                [nn.Conv2d(c_in, half, 1, stride=stride, bias=False),
                 nn.Conv2d(c_in, c_out - half, 1, stride=stride, bias=False)]
            )
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track)

    def forward(self, x):
        x = self.relu(x)
        if len(self.convs) == 1:
            return self.bn(self.convs[0](x))
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1))


def _skip(c_in, c_out, stride, affine, track):
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return FactorizedReduce(c_in, c_out, stride, affine, track)


class AvgPool3x3(nn.Module):
    """nn.AvgPool2d(3, stride, padding=1, count_include_pad=False), computed as a depthwise box
    convolution divided by each window's count of in-bounds pixels: the same numbers to rounding, and
    faster on CPU, where torch's pooling kernel took a third of a sampled NB201 supernet step
    (benchmarks/avg_pool.py). No state: checkpoints are unchanged."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride
        self._counts: dict = {}  # (H, W, device, dtype) -> the count map of that input size

    def _count(self, x: torch.Tensor) -> torch.Tensor:
        # An exported or compiled graph computes the map itself: a cached tensor would be a stray attribute.
        cached = not (torch.compiler.is_compiling() or torch.compiler.is_exporting())
        key = (*x.shape[2:], x.device, x.dtype)
        if cached and key in self._counts:
            return self._counts[key]
        count = nn.functional.conv2d(x.new_ones(1, 1, *x.shape[2:]), x.new_ones(1, 1, 3, 3), stride=self.stride,
                                     padding=1)
        if cached:
            self._counts[key] = count
        return count

    def forward(self, x):
        channels = x.shape[1]
        box = x.new_ones(1, 1, 3, 3).expand(channels, 1, 3, 3)
        return nn.functional.conv2d(x, box, stride=self.stride, padding=1, groups=channels) / self._count(x)


def _pool(c_in, c_out, stride, affine, track):
    pool = AvgPool3x3(stride)
    if c_in == c_out:
        return pool
    return nn.Sequential(ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track), pool)


def _max_pool(c_in, c_out, stride, affine, track):
    pool = nn.MaxPool2d(3, stride=stride, padding=1)
    if c_in == c_out:
        return pool
    return nn.Sequential(ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track), pool)


MBCONV_KERNELS, MBCONV_EXPANSIONS = (3, 5, 7), (3, 6)  # AutoHAS's choices per block
MBCONV_OPS = tuple(f"mb_k{k}_e{e}" for k in MBCONV_KERNELS for e in MBCONV_EXPANSIONS)


def mbconv_choice(name: str) -> tuple[int, int]:
    """(kernel, expansion) of an MBConv op name, e.g. mb_k5_e6 -> (5, 6)."""
    kernel, expansion = name.removeprefix("mb_k").split("_e")
    return int(kernel), int(expansion)


def _mbconv(kernel: int, expansion: int):
    return lambda c_in, c_out, stride, affine, track: InvertedResidual(c_in, c_out, kernel, stride, expansion,
                                                                       affine, track)

OPS = Registry("op", {
    "none": lambda c_in, c_out, stride, affine, track: Zero(c_in, c_out, stride),
    "skip_connect": _skip,
    "nor_conv_1x1": lambda c_in, c_out, stride, affine, track: ReLUConvBN(c_in, c_out, 1, stride, 0, affine, track),
    "nor_conv_3x3": lambda c_in, c_out, stride, affine, track: ReLUConvBN(c_in, c_out, 3, stride, 1, affine, track),
    "avg_pool_3x3": _pool,
    "max_pool_3x3": _max_pool,
    "sep_conv_3x3": lambda c_in, c_out, stride, affine, track: SepConv(c_in, c_out, 3, stride, 1, affine, track),
    "sep_conv_5x5": lambda c_in, c_out, stride, affine, track: SepConv(c_in, c_out, 5, stride, 2, affine, track),
    "dil_conv_3x3": lambda c_in, c_out, stride, affine, track: DilConv(c_in, c_out, 3, stride, 2, 2, affine, track),
    "dil_conv_5x5": lambda c_in, c_out, stride, affine, track: DilConv(c_in, c_out, 5, stride, 4, 2, affine, track),
    **{name: _mbconv(*mbconv_choice(name)) for name in MBCONV_OPS},
})


def normed_op(name: str, c: int, stride: int, affine: bool, track: bool, norm: bool) -> nn.Module:
    """OPS[name] at width `c`; with `norm`, followed by a batch norm unless it already ends in one (ISTA-NAS's
    one-stage supernet: every op's output is normalised, the parameter-free ones too, so that how much an
    op contributes is its mixing weight's doing alone). `none` stays as it is: nothing to normalise."""
    op = OPS[name](c, c, stride, affine, track)
    if not norm or isinstance(op, Zero) or isinstance(list(op.modules())[-1], nn.BatchNorm2d):
        return op
    return nn.Sequential(op, nn.BatchNorm2d(c, affine=affine, track_running_stats=track))
