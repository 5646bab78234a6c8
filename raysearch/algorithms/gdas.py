"""GDAS (Dong & Yang, 2019): Gumbel hard straight-through sampling, one op computed per edge.

Per step: a weight step on a training batch, then an encoding step on a
validation batch, each with its own sample (one sample per forward pass,
shared by all cells). tau falls linearly per epoch from `tau_max` to
`tau_min`: tau_e = tau_max - (tau_max - tau_min) e / (E - 1). Derivation:
argmax per edge (the space's rule). NB201 defaults of the paper: weight
decay 5e-4 and Nesterov momentum (the rest as DARTS). The weights of the
ops a step did not sample take a zero-gradient step (weight decay and
momentum), as in the reference, whose PyTorch zeroed gradients instead of
dropping them, and as in AutoHAS.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.algorithms.supernet import SupernetConfig, SupernetSearch
from raysearch.schema import spec
from raysearch.relax import gumbel_hard, linear_tau


@dataclass(frozen=True)
class GDASConfig(SupernetConfig):
    weight_decay: float = spec(5e-4, ge=0.0)  # L2 penalty on the weights (GDAS on NB201: 5e-4)
    nesterov: bool = True  # Nesterov momentum for the weights (GDAS on NB201)
    tau_max: float = spec(10.0, gt=0.0)  # Gumbel temperature of the first epoch
    tau_min: float = spec(0.1, gt=0.0)  # Gumbel temperature of the last epoch


class GDAS(SupernetSearch):
    arch_first = False

    def tau(self) -> float:
        return linear_tau(self.options.tau_max, self.options.tau_min, self.epoch, self.epochs)

    def mix(self):
        weights, active = {}, {}
        for name, a in self.alpha.items():
            weights[name], index = gumbel_hard(a, self.tau(), self.generator)
            active[name] = index.tolist()
        return weights, active

    def step(self, train_batch, val_batch):
        tau = self.tau()  # the temperature this step samples with
        return {**super().step(train_batch, val_batch), "tau": tau}
