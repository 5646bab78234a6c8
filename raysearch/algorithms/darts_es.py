"""DARTS-ES (Zela et al., 2020): DARTS stopped early when the validation loss's curvature in alpha grows.

Every `es_interval` epochs, the dominant eigenvalue of the Hessian of the
validation loss w.r.t. all encodings is measured on one validation batch, by
power iteration on exact Hessian-vector products (double backward). The
eigenvalues are smoothed by a local average over the last `es_window`
measurements; the search stops when the current average exceeds
`es_threshold` x the average `es_lookback` measurements back, once that
earlier measurement is at epoch >= `es_min_epoch`, and returns the encodings
of that earlier measurement (they are copied back, so the derivation and any
selection read them).

Choices left open: window and look-back count measurements (not epochs);
the average is trailing (over the measurements so far while fewer than
`es_window` exist), so a stop is known when it happens; 20 power iterations
from a seeded random start give the eigenvalue of largest magnitude, which
is the largest one once the curvature that matters (positive) dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raysearch.algorithms.darts import Darts, DartsConfig
from raysearch.schema import spec


@dataclass(frozen=True)
class DartsESConfig(DartsConfig):
    es_interval: int = spec(2, ge=1)  # epochs between eigenvalue measurements
    es_window: int = spec(5, ge=1)  # measurements in the local average
    es_lookback: int = spec(4, ge=1)  # the current average is compared with the one this many measurements back
    es_threshold: float = spec(1.3, gt=1.0)  # stop when the ratio of the two averages exceeds this
    es_min_epoch: int = spec(10, ge=0)  # the earlier measurement must be at least at this epoch
    power_iterations: int = spec(20, ge=1)  # power-iteration steps per measurement


def dominant_eigenvalue(loss: torch.Tensor, params: list[torch.Tensor], iterations: int,
                        generator: torch.Generator, average=list) -> float:
    """The eigenvalue of largest magnitude of the Hessian of `loss` w.r.t. `params` (Rayleigh quotient).

    `average` maps each rank's Hessian-vector product to the mean over ranks (the Hessian of the mean loss).
    """
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn(p.shape, generator=generator).to(p.device) for p in params]
    value = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = average(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))
        value = sum((h * u).sum() for h, u in zip(hv, v)).item()
        v = [h.detach() for h in hv]
    return value


def stop_index(values: list[float], epochs: list[int], window: int, lookback: int, threshold: float,
               min_epoch: int) -> int | None:
    """Index of the earlier measurement to return to, if the latest one triggers the stop; else None."""
    now, earlier = len(values) - 1, len(values) - 1 - lookback
    if earlier < 0 or epochs[earlier] < min_epoch:
        return None

    def average(i):
        recent = values[max(0, i - window + 1): i + 1]
        return sum(recent) / len(recent)

    return earlier if average(now) / average(earlier) > threshold else None


class DartsES(Darts):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.measurements: list[tuple[int, float, dict]] = []  # (epoch, eigenvalue, encodings then)

    def end_epoch(self, val_batch) -> dict[str, float]:
        o = self.options
        if self.epoch % o.es_interval:
            return {}
        x, y = (t.to(self.device) for t in val_batch)
        loss = F.cross_entropy(self.net(x, *self.mix()), y)
        value = dominant_eigenvalue(loss, list(self.alpha.values()), o.power_iterations, self.generator,
                                    self.dist.average)
        self.measurements.append((self.epoch, value, {k: a.detach().clone() for k, a in self.alpha.items()}))
        index = stop_index([m[1] for m in self.measurements], [m[0] for m in self.measurements],
                           o.es_window, o.es_lookback, o.es_threshold, o.es_min_epoch)
        metrics = {"hessian_eigenvalue": value}
        if index is not None:
            self.stopped = True
            with torch.no_grad():
                for name, a in self.alpha.items():
                    a.copy_(self.measurements[index][2][name])
            metrics["stopped_at_epoch"] = float(self.measurements[index][0])
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "measurements": list(self.measurements)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.measurements = list(state["measurements"])
