"""One edge of a supernet: its candidate ops and how their outputs are mixed."""

from __future__ import annotations

import torch
from torch import nn


class Edge(nn.ModuleList):
    """The candidate ops of one edge (iterating yields them), mixed by `mix`.

    `partial` k > 1 (PC-DARTS, used by progressive DrNAS): the ops were built
    for C/k channels; only the first C/k channels of the input go through them,
    the rest bypass (max-pooled on a strided edge), and the concatenation is
    channel-shuffled so that another slice is searched in the next layer.
    `keep` lists the ops still computed after pruning (None: all).
    `scale` (a buffer, None unless set): a fixed edge's output is its op's times this, the weight
    with which a supernet mixed the op (DHA's ISTA weights are not 1; raysearch.model.fixed_from_supernet).
    """

    def __init__(self, ops, partial: int = 1, stride: int = 1):
        super().__init__(ops)
        self.partial, self.stride = partial, stride
        self.keep: list[int] | None = None
        self.register_buffer("scale", None)

    def set_scale(self, value: float) -> None:
        self.scale = torch.tensor(float(value))

    def mix(self, x, weights: torch.Tensor | None, active: int | None = None):
        """weights None: the edge holds a single fixed op.
        active None: the mixture sum_k w_k op_k(x) over the kept ops.
        active k: hard sampling (GDAS / AutoHAS). Only op k is computed and scaled by
        its weight (value 1); the other weights (value 0) are added as scalars so the
        output is unchanged but every weight still receives a gradient.
        active -1: the edge is off (ISTA's weights are exactly zero on it): nothing is
        computed and it adds its weights' zero sum.
        """
        if active is not None and active < 0:
            return weights.sum()
        if self.partial > 1:
            width = x.shape[1] // self.partial
            x, rest = x[:, :width], x[:, width:]
        if weights is None:
            out = self[0](x) if self.scale is None else self[0](x) * self.scale
        elif active is None:
            out = sum(weights[k] * self[k](x) for k in (self.keep or range(len(self))))
        else:
            out = self[active](x) * weights[active] + (weights.sum() - weights[active])
        if self.partial == 1:
            return out
        if self.stride > 1:
            rest = nn.functional.max_pool2d(rest, 2, 2)
        return channel_shuffle(torch.cat([out, rest], dim=1), self.partial)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
