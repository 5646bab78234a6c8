"""Plain-PyTorch training pieces shared by searches and fixed-network training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raysearch.schema import spec

SCHEDULES = ("cosine", "constant")  # what scheduled_lr decays by, for every lr a config schedules


@dataclass(frozen=True)
class TrainingConfig:
    """The baseline training recipe: its HPs are the defaults a search scales, and retraining uses it."""

    lr: float = spec(0.1, gt=0.0)  # initial SGD learning rate
    lr_schedule: str = spec("cosine", choices=SCHEDULES)  # decay of lr over all steps
    warmup_epochs: int = spec(0, ge=0)  # linear lr warm-up before the schedule, in every search and retraining
    weight_decay: float = spec(5e-4, ge=0.0)  # L2 penalty coefficient
    momentum: float = spec(0.9, ge=0.0, lt=1.0)  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    grad_clip: float | None = spec(5.0, gt=0.0)  # max gradient norm, or null for no clipping


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the trial ends as failed with this reason."""


DIVERGED = "diverged"  # key of a trial's last result when it ended because its loss diverged (value: the reason)


def clipped(grads: list[torch.Tensor], max_norm: float | None) -> list[torch.Tensor]:
    """`grads` scaled so that their total norm is at most `max_norm` (None: unchanged), as
    clip_grad_norm_ does to `.grad`, for gradients held apart from the parameters."""
    if max_norm is None:
        return list(grads)
    scale = (max_norm / (torch.nn.utils.get_total_norm(grads) + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads]


def check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(f"{what} is {loss.item()} at step {step}: the run diverged")


def scheduled_lr(base: float, step: int, total_steps: int, schedule: str, warmup_steps: int = 0,
                 floor: float = 0.0) -> float:
    """Learning rate at `step` of `total_steps`: a linear warm-up to `base` over the first `warmup_steps`
    (base x (step + 1) / warmup_steps, as AutoHAS's schedule warms up its first epochs), then cosine decay
    to `floor` over the steps after it, or constant."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "constant":
        return base
    step, total = step - warmup_steps, max(total_steps - warmup_steps, 1)
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * min(step, total) / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The lr of every param group of `optimizer` (schedules are computed by the caller, per step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def replay(values, step: int, total_steps: int) -> float:
    """The value of a recorded per-step list at the same fraction of a run of `total_steps`.

    A search records one learning rate per search step; a retraining over a
    different number of steps (e.g. on search-train + search-val) reads the
    list at the same point of progress.
    """
    index = min(len(values) - 1, step * len(values) // total_steps)
    return float(values[index])


@torch.no_grad()
def split_sums(forward, x: torch.Tensor, y: torch.Tensor, device, chunk: int = 512,
               shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """[summed cross-entropy, correct count] of `forward` over a split in chunks of `chunk`; with `shard`
    (rank, ranks), over chunks rank, rank + ranks, ... only (each chunk as one process would see it)."""
    rank, ranks = shard
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(rank * chunk, len(x), chunk * ranks):
        xb, yb = x[start : start + chunk].to(device), y[start : start + chunk].to(device)
        logits = forward(xb)
        sums[0] += F.cross_entropy(logits, yb, reduction="sum").double()
        sums[1] += (logits.argmax(1) == yb).sum().double()
    return sums


def accuracy(forward, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 512) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `forward` over a whole split, in chunks."""
    loss_sum, correct = split_sums(forward, x, y, device, batch_size).tolist()
    return loss_sum / len(x), correct / len(x)


def pick_device() -> torch.device:
    """The run-time device: the first GPU when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Optimizers:
    """Optimizers that step together as one (e.g. DHA's encodings: the codes' Adam and the pair matrix's SGD)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list) -> None:
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)
