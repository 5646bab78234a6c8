"""ISTA-NAS's sparse-coding relaxation (Yang et al., 2020), as DHA uses it: only the ops on the support compute.

Per group of a space's decisions (a node's incoming edges: DARTS keeps 2 of them, NB201 all; spaces
without nodes, e.g. MBConv, a group per row keeping it) a fixed measurement matrix A of m x n over the
group's n = rows x ops entries and a learnable code b in R^m. The sparse architecture x is recovered
from b by LASSO (lambda 1e-5, solved by ISTA) once per epoch; its support S keeps, by DHA's rule, per
row the op of largest signed x and then the `keep` rows whose op is largest (never an op the space
excludes, e.g. DARTS's `none`). A forward pass mixes with w_S = A_S^T b - E_S^T x_S, E = A^T A - I:
exactly zero off S, so an edge off the support computes nothing and a kept edge computes one op. A group
freezes (its code stops moving and its support is final) once its recovered x moves by at most
`freeze_tol` (L2) between two epochs.

As the reference code: b starts at 1e-3 N(0, 1) (`code_init_std`), so that after an epoch of steps b is
what the codes learned, not where they started, and m = 7 (`proj_dims`). Choices it leaves open or that
differ from it: m is capped at n - 1 (a measurement must compress); the support keeps one op per row,
because our genotypes (and a DARTS cell) take one op per kept edge, where ISTA-NAS's top-2 |x| could pick
two ops of one edge; A is U[0, 1) as the reference's (`uniform`) in a space whose nodes choose their
edges (DARTS), and zero-mean U[-1, 1) (`centered`) where every group keeps all its rows (NB201, MBConv): there a
support may hold one entry, whose code gradient a_s g_s is one signed scalar times a non-negative
column, so Adam's per-entry step would be the same on every entry of b (common-mode) and LASSO would
move the support where A's columns point, not where the loss does.
"""

from __future__ import annotations

import torch
from torch import nn

from raysearch.relax import ista_weights, lasso_ista, top_support


def groups_of(space) -> list[tuple[str, tuple[int, ...], int]]:
    """(encoding, rows, rows kept) of every group: the space's node groups, else one group per row."""
    return space.node_groups() or [(name, (row,), 1) for name, (rows, _) in space.encodings.items()
                                   for row in range(len(rows))]


MEASUREMENTS = ("auto", "uniform", "centered")  # A's distribution; auto: by the group (see the module's doc)


class IstaArchitecture(nn.Module):
    """The codes b (parameters), the fixed matrices, the recovered x and supports of a space's groups."""

    def __init__(self, space, proj_dims: int, code_init_std: float, lam: float, freeze_tol: float,
                 generator: torch.Generator, measurement: str = "auto"):
        super().__init__()
        self.space, self.lam, self.freeze_tol = space, lam, freeze_tol
        self.groups = groups_of(space)
        self.shapes = space.encoding_shapes()
        excluded = set(space.excluded_ops)
        self.codes = nn.ParameterList()
        # auto: the reference's U[0, 1) in a space whose nodes pick their edges (DARTS), zero-mean elsewhere
        centered = measurement == "centered" or (
            measurement == "auto" and all(keep == len(rows) for _, rows, keep in self.groups))
        for k, (name, rows, keep) in enumerate(self.groups):
            op_names = space.encodings[name][1]
            n = len(rows) * len(op_names)
            m = min(proj_dims, n - 1)
            A = torch.rand(m, n, generator=generator)
            self.register_buffer(f"A{k}", 2.0 * A - 1.0 if centered else A)
            self.register_buffer(f"x{k}", torch.zeros(n))
            self.register_buffer(f"support{k}", torch.zeros(n, dtype=torch.bool))
            self.register_buffer(f"allowed{k}", torch.tensor([op not in excluded for op in op_names] * len(rows)))
            code = code_init_std * torch.randn(m, generator=generator)
            self.codes.append(nn.Parameter(code))
            self.register_buffer(f"b0{k}", code.clone())  # the start: the scale of what the codes learn
            self.register_buffer(f"start{k}", code.clone())  # the code at the last recovery
        self.register_buffer("frozen", torch.zeros(len(self.groups), dtype=torch.bool))
        self.recover(first=True)

    def _buffers_of(self, k: int):
        return getattr(self, f"A{k}"), getattr(self, f"x{k}"), getattr(self, f"support{k}")

    @torch.no_grad()
    def recover(self, first: bool = False) -> dict[str, float]:
        """LASSO recovery of every group not frozen, its new support, and the groups that freeze now
        (never on the first recovery). Returns how many groups are frozen, how many rows changed their op
        (`support_changes`) and, over the groups that searched, the code's move since the last recovery
        relative to its start (`code_change`: |b - b_last| / |b0|) and its common-mode share
        (`code_common_mode`: |sum(b - b_last)| / (sqrt(m) |b - b_last|), 1 when every entry took the same
        step)."""
        changes, moves, common = 0, [], []
        for k, (_, rows, keep) in enumerate(self.groups):
            if self.frozen[k]:
                continue
            A, x, support = self._buffers_of(k)
            code, start = self.codes[k].detach(), getattr(self, f"start{k}")
            new = lasso_ista(A, code, self.lam).to(x)
            if not first:
                delta = code - start
                moves.append(float(delta.norm() / getattr(self, f"b0{k}").norm().clamp_min(1e-12)))
                common.append(float(delta.sum().abs() / (delta.numel() ** 0.5 * delta.norm()).clamp_min(1e-12)))
                if torch.linalg.vector_norm(new - x) <= self.freeze_tol:
                    self.frozen[k] = True
            x.copy_(new)
            start.copy_(code)
            before = support.clone()
            support.copy_(top_support(new.cpu(), len(rows), keep, getattr(self, f"allowed{k}").cpu()))
            if not first:  # rows whose op changed (or that went on or off the support)
                changes += int((before != support).view(len(rows), -1).any(1).sum())
        metrics = {"frozen_nodes": float(self.frozen.sum()), "support_changes": float(changes)}
        if moves:
            metrics["code_change"] = sum(moves) / len(moves)
            metrics["code_common_mode"] = sum(common) / len(common)
        return metrics

    def freeze_all(self) -> None:
        """End the search: every group keeps the support it has (and trained), its code stops moving."""
        self.frozen[:] = True

    @property
    def all_frozen(self) -> bool:
        return bool(self.frozen.all())

    def mix(self) -> tuple[dict, dict]:
        """Mixing weights ([rows, ops] per encoding, differentiable in the codes) and the op each row
        computes (-1: the row is off the support)."""
        weights = {name: [None] * rows for name, (rows, _) in self.shapes.items()}
        for k, (name, rows, _) in enumerate(self.groups):
            A, x, support = self._buffers_of(k)
            w = ista_weights(A, self.codes[k], x, support).view(len(rows), -1)
            for i, row in enumerate(rows):
                weights[name][row] = w[i]
        mixed = {name: torch.stack(rows) for name, rows in weights.items()}
        return mixed, self.active()

    def active(self) -> dict[str, list[int]]:
        out = {name: [-1] * rows for name, (rows, _) in self.shapes.items()}
        for k, (name, rows, _) in enumerate(self.groups):
            on = self._buffers_of(k)[2].view(len(rows), -1)
            for i, row in enumerate(rows):
                if on[i].any():
                    out[name][row] = int(on[i].nonzero()[0])
        return out

    @torch.no_grad()
    def support_weights(self, active: dict | None = None) -> dict[str, torch.Tensor]:
        """One-hot rows on the support (`active`'s, by default the current one), zero rows off it: what
        the space's derivation rule reads."""
        out = {name: torch.zeros(shape) for name, shape in self.shapes.items()}
        for name, ops in (self.active() if active is None else active).items():
            for row, op in enumerate(ops):
                if op >= 0:
                    out[name][row, op] = 1.0
        return out

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        """Per row, |z| normalised, z = x + A^T (b - A x) the dense one-step estimate from the codes as they
        are now (so it moves with every code step; the support is read at the epochs' ends); a row whose
        z is zero shows as uniform."""
        out = {name: torch.zeros(shape) for name, shape in self.shapes.items()}
        for k, (name, rows, _) in enumerate(self.groups):
            A, x, _ = self._buffers_of(k)
            z = (x + A.T @ (self.codes[k].detach() - A @ x)).abs().view(len(rows), -1).cpu()
            for i, row in enumerate(rows):
                total = z[i].sum()
                out[name][row] = z[i] / total if total > 0 else torch.full_like(z[i], 1.0 / len(z[i]))
        return out

    def trainable_codes(self) -> list[nn.Parameter]:
        """The codes of the groups not frozen (a frozen code no longer moves)."""
        return [code for k, code in enumerate(self.codes) if not self.frozen[k]]
