"""DrNAS (Chen et al., 2021): mixing weights drawn from Dirichlet(ELU(beta) + 1), pathwise gradients.

Per step: the encoding (beta) step on a validation batch first, then the
weight step, each with a fresh draw shared by all cells. beta is regularised
toward Dir(1) by Adam's weight decay (1e-3, the reference code's default) and,
if `kl_weight` > 0, by an explicit KL(Dir(ELU(beta) + 1) || Dir(1)) term.
Derivation: argmax of the Dirichlet mean (the space's rule on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.algorithms.supernet import SupernetConfig, SupernetSearch
from raysearch.config import spec
from raysearch.relax import dirichlet, dirichlet_kl_to_uniform, dirichlet_mean


@dataclass(frozen=True)
class DrNASConfig(SupernetConfig):
    kl_weight: float = spec(0.0, ge=0.0)  # weight of the KL(Dir || Dir(1)) term in the encoding loss (0: off)


class DrNAS(SupernetSearch):
    def mix(self):
        return {name: dirichlet(b, self.generator) for name, b in self.alpha.items()}, None

    def probabilities(self):
        return {name: dirichlet_mean(b.detach()) for name, b in self.alpha.items()}

    def encoding_loss(self, val):
        loss, logits = super().encoding_loss(val)
        if self.options.kl_weight > 0:
            loss = loss + self.options.kl_weight * sum(dirichlet_kl_to_uniform(b) for b in self.alpha.values())
        return loss, logits
