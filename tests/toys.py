"""A toy search space whose supernet has an exactly quadratic loss, for checking AutoHAS's HP updates.

Rows of a batch are [a_i, t_i]; the supernet outputs 2-class logits
[-(q_i + 20), 0] with q_i = 0.5 (a_i . w - t_i)^2 and all labels 0, so the
cross-entropy is softplus(q_i + 20) = q_i + 20 to within 2e-9: least squares.
"""

from __future__ import annotations

import torch
from torch import nn

from raysearch.spaces.mixed import Edge


class QuadraticNet(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def forward(self, x, weights, active=None):
        q = 0.5 * (x[:, :-1] @ self.w - x[:, -1]) ** 2
        logits = torch.stack([-(q + 20.0), torch.zeros_like(q)], dim=1)
        return logits * weights["arch"][0, 0]  # the (1-choice) architecture stays in the graph


class ToySpace:
    """The parts of raysearch.spaces.Space a search algorithm uses."""

    name = "toy"
    encodings = {"arch": (("e",), ("w",))}

    def __init__(self, dim: int):
        self.dim = dim

    def encoding_shapes(self):
        return {"arch": (1, 1)}

    def supernet(self):
        return QuadraticNet(self.dim)

    def derive(self, weights):
        return tuple(weights["arch"].argmax(-1).tolist())

    def derived_weights(self, genotype):
        return {"arch": torch.ones(1, 1)}


def quadratic_batch(dim: int, curvature: float, target: torch.Tensor, gen: torch.Generator):
    """A batch whose least-squares Hessian is exactly `curvature` * I, and labels 0."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    a = q * (curvature * dim) ** 0.5  # rows a_i with mean_i a_i a_i^T = curvature * I
    x = torch.cat([a, (a @ target).unsqueeze(1)], dim=1)
    return x, torch.zeros(dim, dtype=torch.long)


class SmoothNet(torch.nn.Module):
    """A two-edge supernet of smooth ops (no ReLU kinks), where finite differences are accurate."""

    def __init__(self, dim: int = 64, hidden: int = 6, classes: int = 10):
        super().__init__()
        self.stem = torch.nn.Linear(dim, hidden)
        self.edges = torch.nn.ModuleList(
            Edge([torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh()),
                  torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Softplus()),
                  torch.nn.Identity()]) for _ in range(2))
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, x, weights, active=None):
        h = self.stem(x.flatten(1))
        for k, edge in enumerate(self.edges):
            h = edge.mix(h, weights["arch"][k], None if active is None else active["arch"][k])
        return self.head(h)


class SmoothSpace:
    """Two edges of three smooth ops over flattened 8x8 digits."""

    name = "smooth"
    encodings = {"arch": (("e0", "e1"), ("tanh", "softplus", "identity"))}
    excluded_ops = ()

    def encoding_shapes(self):
        return {"arch": (2, 3)}

    def supernet(self):
        return SmoothNet()

    def derive(self, weights):
        return tuple(weights["arch"].argmax(-1).tolist())
