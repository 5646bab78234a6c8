"""Relaxations that turn categorical choices (logits) into differentiable weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from raysearch.training import DivergenceError

_MAX_DRAWS = 10


def gumbel_hard(logits: torch.Tensor, tau: float, generator: torch.Generator):
    """Gumbel hard straight-through sample of each row of `logits` (GDAS, AutoHAS).

    Returns (weights, index): weights equal one_hot(index) in the forward pass
    and carry the gradient of softmax((log_softmax(logits) + g) / tau).
    The noise is drawn on the generator's device (CPU) so that a seeded search
    is reproducible on any device; a draw with inf/NaN is drawn again.
    """
    check_encoding(logits)
    log_p = F.log_softmax(logits, dim=-1)
    for _ in range(_MAX_DRAWS):
        noise = torch.empty(logits.shape).exponential_(generator=generator).log_().neg_()
        probs = F.softmax((log_p + noise.to(logits.device)) / tau, dim=-1)
        if torch.isfinite(probs).all():
            break
    else:
        raise DivergenceError(f"{_MAX_DRAWS} Gumbel draws in a row gave NaN/inf (tau={tau})")
    index = probs.argmax(dim=-1)
    hard = F.one_hot(index, logits.shape[-1]).to(probs.dtype)
    return hard - probs.detach() + probs, index


def linear_tau(tau_max: float, tau_min: float, epoch: int, epochs: int) -> float:
    """GDAS's temperature schedule: linear per epoch from tau_max (first epoch) to tau_min (last)."""
    last = max(epochs - 1, 1)
    return tau_max - (tau_max - tau_min) * min(epoch, last) / last


def probability_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of `p` (each sums to 1; zeros, e.g. pruned ops, count 0)."""
    return -torch.special.xlogy(p, p).sum(-1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the categorical distributions softmax(logits) over the last dim."""
    return probability_entropy(logits.softmax(-1))


def check_encoding(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise DivergenceError("an architecture/HP encoding holds NaN or inf: the search diverged")


def dirichlet(beta: torch.Tensor, generator: torch.Generator, keep: torch.Tensor | None = None) -> torch.Tensor:
    """DrNAS: one reparameterised draw theta ~ Dirichlet(ELU(beta) + 1) per row (pathwise gradients).

    Drawn on the CPU from the search's own generator state, so that a seeded
    search is reproducible on any device and does not consume the global RNG.
    `keep` ([rows, n] op indices) draws over those ops only; the others get 0.
    """
    check_encoding(beta)
    concentration = F.elu(beta.cpu()) + 1.0
    if keep is not None:
        concentration = concentration.gather(-1, keep.cpu())
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        theta = torch.distributions.Dirichlet(concentration).rsample()
        generator.set_state(torch.get_rng_state())
    if keep is not None:
        theta = torch.zeros(beta.shape).scatter(-1, keep.cpu(), theta)
    return theta.to(beta.device)


def dirichlet_mean(beta: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    concentration = F.elu(beta) + 1.0
    if keep is not None:
        concentration = torch.zeros_like(concentration).scatter(-1, keep, concentration.gather(-1, keep))
    return concentration / concentration.sum(-1, keepdim=True)


def dirichlet_kl_to_uniform(beta: torch.Tensor) -> torch.Tensor:
    """Sum over rows of KL(Dir(ELU(beta) + 1) || Dir(1)): DrNAS's explicit regulariser."""
    concentration = F.elu(beta) + 1.0
    return torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration),
                                             torch.distributions.Dirichlet(torch.ones_like(concentration))).sum()


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every row of `v` onto the probability simplex (Duchi et al., 2008)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = u.cumsum(-1) - 1.0
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    rho = (u - cumulative / k > 0).sum(-1, keepdim=True)
    shift = cumulative.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - shift).clamp(min=0.0)


def clip_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """SDARTS's reference `clip`: every row clamped to [0, 1] and divided by its sum; a row that clamps to
    all zeros puts 1 on its largest entry. Unlike the Euclidean projection it keeps the noise's ratios
    between the entries that stay positive."""
    clipped = v.clamp(0.0, 1.0)
    empty = clipped.sum(-1, keepdim=True) == 0
    largest = torch.zeros_like(v).scatter_(-1, v.argmax(-1, keepdim=True), 1.0)
    clipped = torch.where(empty, largest, clipped)
    return clipped / clipped.sum(-1, keepdim=True)


NOISE_PROJECTIONS = {"clip": clip_to_simplex, "euclidean": project_simplex}  # SDARTS-RS: back onto the simplex


def uniform_perturbation(weights: torch.Tensor, epsilon: float, generator: torch.Generator,
                         projection: str = "clip") -> torch.Tensor:
    """SDARTS-RS: weights + U[-epsilon, epsilon] noise, brought back onto the simplex by `projection`
    (NOISE_PROJECTIONS: the reference's clip, or the Euclidean projection)."""
    noise = (torch.rand(weights.shape, generator=generator) * 2.0 - 1.0) * epsilon
    return NOISE_PROJECTIONS[projection](weights + noise.to(weights.device))


def lasso_ista(A: torch.Tensor, b: torch.Tensor, lam: float = 1e-5, iterations: int = 200,
               shrink: float = 0.5, tol: float = 1e-12) -> torch.Tensor:
    """argmin_x 0.5 ||A x - b||^2 + lam ||x||_1: ISTA-NAS's recovery of the sparse architecture x from its
    code b (the reference solves it with cvxpy and MOSEK).

    Plain ISTA moves toward sparsity by lam / L a step, so at lam = 1e-5 it would need millions of steps
    and stops near the dense least-norm solution. This is ISTA accelerated (FISTA) with continuation:
    the threshold starts at ||A^T b||_inf and halves (`shrink`) down to `lam`, each level warm-started
    and run for at most `iterations` steps or until a step moves x by at most `tol`. Float64 NumPy:
    the matrices are tiny (m x n, n = a node's candidates) and per-step overhead dominates.
    """
    A64, b64 = A.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    step = 1.0 / np.linalg.norm(A64, 2) ** 2
    gram, target = A64.T @ A64, A64.T @ b64
    x = np.zeros(A64.shape[1])
    level = max(float(np.abs(target).max()), lam)
    while True:
        level = max(level * shrink, lam)
        y, t = x.copy(), 1.0
        for _ in range(iterations):
            z = y - step * (gram @ y - target)
            new = np.sign(z) * np.maximum(np.abs(z) - step * level, 0.0)
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = new + (t - 1.0) / t_next * (new - x)
            moved = np.abs(new - x).max()
            x, t = new, t_next
            if moved <= tol:
                break
        if level == lam:
            return torch.from_numpy(x)


def top_support(x: torch.Tensor, rows: int, keep: int, allowed: torch.Tensor) -> torch.Tensor:
    """The support of a group's recovered x ([rows * ops], row-major), by DHA's rule: per row the op of
    largest signed x among the `allowed` ones, then the `keep` rows whose op is largest (a cell keeps one
    op per kept edge). Signed, not |x|: an op whose weight went strongly negative is one the loss pushed
    out, not a strong one. Ties break by index, so every rank picks the same support."""
    ops = len(x) // rows
    best = []  # (value, row, index) of every row's best allowed op
    for row in range(rows):
        candidates = [i for i in range(row * ops, (row + 1) * ops) if allowed[i]]
        if candidates:
            i = max(candidates, key=lambda j: (float(x[j]), -j))
            best.append((float(x[i]), row, i))
    chosen = [i for _, _, i in sorted(best, key=lambda b: (-b[0], b[1]))[:keep]]
    support = torch.zeros(len(x), dtype=torch.bool)
    support[chosen] = True
    return support


def ista_weights(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """ISTA-NAS's mixing weights of one group: on the support S, A_S^T b - E_S^T x_S with E = A^T A - I
    (= x_S + A_S^T (b - A_S x_S), one ISTA step restricted to S); exactly zero off S. Differentiable in b."""
    A_s = A * support.to(A.dtype)
    x_s = x.to(A.dtype) * support.to(A.dtype)
    return A_s.T @ b - (A_s.T @ (A_s @ x_s) - x_s)
