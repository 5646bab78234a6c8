"""The one table of candidate operations, keyed by the names genotypes use.

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


def _pool(c_in, c_out, stride, affine, track):
    pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if c_in == c_out:
        return pool
    return nn.Sequential(ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track), pool)


OPS = Registry("op", {
    "none": lambda c_in, c_out, stride, affine, track: Zero(c_in, c_out, stride),
    "skip_connect": _skip,
    "nor_conv_1x1": lambda c_in, c_out, stride, affine, track: ReLUConvBN(c_in, c_out, 1, stride, 0, affine, track),
    "nor_conv_3x3": lambda c_in, c_out, stride, affine, track: ReLUConvBN(c_in, c_out, 3, stride, 1, affine, track),
    "avg_pool_3x3": _pool,
})
