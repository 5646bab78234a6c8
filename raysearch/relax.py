"""Relaxations that turn categorical choices (logits) into differentiable weights."""

from __future__ import annotations

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
