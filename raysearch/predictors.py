"""Ranking predictors: learn which configuration is better from pairs, not from absolute accuracies.

RANK-NOSH only ever compares configurations trained to the same number of
epochs (or knows that one got further than another), so a predictor that
learns an order from (winner, loser) pairs uses exactly the information the
pyramid provides; absolute accuracies at different epochs are not comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("logistic", "hinge")


class PairwiseRanker:
    """An MLP score s(x), trained so that s(winner) > s(loser) for every given pair.

    Each `fit` starts from freshly seeded weights, so the same pairs give the
    same ranker however often it was refitted before.
    """

    def __init__(self, in_features: int, hidden: int = 64, epochs: int = 200, lr: float = 0.01,
                 loss: str = "logistic", seed: int = 0):
        if loss not in LOSSES:
            raise ValueError(f"unknown ranking loss {loss!r}; known: {', '.join(LOSSES)}")
        self.in_features, self.hidden, self.epochs, self.lr, self.loss, self.seed = (
            in_features, hidden, epochs, lr, loss, seed)
        self.net = self._new_net()

    def _new_net(self) -> nn.Module:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # seeded init without disturbing the caller's global RNG
        net = nn.Sequential(nn.Linear(self.in_features, self.hidden), nn.ReLU(),
                            nn.Linear(self.hidden, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        torch.random.set_rng_state(generator_state)
        return net

    def _pair_loss(self, margin: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # margin = s(winner) - s(loser); logistic: -log sigmoid(margin); hinge: max(0, 1 - margin)
        losses = F.softplus(-margin) if self.loss == "logistic" else F.relu(1.0 - margin)
        return (weights * losses).sum() / weights.sum()

    def fit(self, features: torch.Tensor, pairs: torch.Tensor, weights: torch.Tensor | None = None) -> "PairwiseRanker":
        """Train on `features` [n, d] and `pairs` [p, 2] of row indices (winner, loser), full batch; `weights`
        [p] weigh each pair's loss (default: all alike)."""
        self.net = self._new_net()
        if len(pairs) == 0:
            return self
        features, pairs = features.float(), pairs.long()
        weights = torch.ones(len(pairs)) if weights is None else weights.float()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            scores = self.net(features).squeeze(1)
            loss = self._pair_loss(scores[pairs[:, 0]] - scores[pairs[:, 1]], weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return self

    @torch.no_grad()
    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Higher is better; only the order is meaningful."""
        return self.net(features.float()).squeeze(1)
