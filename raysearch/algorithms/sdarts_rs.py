"""SDARTS-RS (Chen & Hsieh, 2020): DARTS whose weight steps see randomly perturbed mixing weights.

Before each weight step, softmax(alpha) gets uniform noise in [-eps, eps]
and is brought back onto the simplex; the encodings themselves are not
changed. As the reference does (`Random_alpha` then `clip`), the noisy rows
are clamped to [0, 1] and divided by their sums (`noise_projection: clip`);
`euclidean` is the nearest point of the simplex instead, which zeroes more
of the small entries. eps ramps linearly per epoch from `epsilon_min` to `epsilon` as in
the reference code: eps_e = epsilon_min + (epsilon - epsilon_min) e / E for
epochs e = 0 .. E-1, so the last epoch's amplitude falls short of `epsilon`
by (epsilon - epsilon_min) / E.
Encoding steps are DARTS's (first order by default, as the reference runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.algorithms.darts import Darts, DartsConfig
from raysearch.schema import spec
from raysearch.relax import NOISE_PROJECTIONS, uniform_perturbation


@dataclass(frozen=True)
class SDartsRSConfig(DartsConfig):
    epsilon: float = spec(0.3, ge=0.0)  # noise amplitude the ramp heads to (e/E: reached one epoch past the last)
    epsilon_min: float = spec(0.03, ge=0.0)  # noise amplitude of the first epoch
    noise_projection: str = spec("clip", choices=tuple(NOISE_PROJECTIONS))  # clip (reference) or euclidean


class SDartsRS(Darts):
    def epsilon(self) -> float:
        o = self.options
        return o.epsilon_min + (o.epsilon - o.epsilon_min) * self.epoch / self.epochs

    def weight_mix(self):
        weights, active = super().weight_mix()
        eps, projection = self.epsilon(), self.options.noise_projection
        return {name: uniform_perturbation(w, eps, self.generator, projection) for name, w in weights.items()}, active
