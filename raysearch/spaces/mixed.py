"""Forward of one edge of a supernet: a weighted mixture of its candidate ops."""

from __future__ import annotations

import torch


def mixed_forward(ops, x, weights: torch.Tensor | None, active: int | None = None):
    """Output of one edge.

    weights None: the edge holds a single fixed op.
    active None: the softmax-style mixture sum_k w_k op_k(x) (every op computed).
    active k: hard sampling (GDAS / AutoHAS). Only op k is computed and scaled by
    its weight (value 1); the other weights (value 0) are added as scalars so the
    output is unchanged but every weight still receives a gradient.
    """
    if weights is None:
        return ops[0](x)
    if active is None:
        return sum(w * op(x) for w, op in zip(weights, ops))
    return ops[active](x) * weights[active] + (weights.sum() - weights[active])
