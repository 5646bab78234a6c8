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
    if not torch.isfinite(logits).all():
        raise DivergenceError("an architecture/HP encoding holds NaN or inf: the search diverged")
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


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the categorical distributions softmax(logits) over the last dim."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()
