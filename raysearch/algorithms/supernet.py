"""What the DARTS family shares: a supernet, its SGD weight step and an Adam step on the encodings.

An algorithm is this base plus its relaxation (`mix`: how encodings become
mixing weights in a forward pass), its step order and, if it needs one, its
own encoding gradient. Defaults are DARTS's (ALGORITHMS.md): weights by SGD
0.025 cosine-annealed to 0.001, momentum 0.9, weight decay 3e-4, gradient
norm clipped at 5; encodings by Adam 3e-4, betas (0.5, 0.999), weight decay
1e-3, initialised as 1e-3 * N(0, 1).

Choice left open by the references: the cosine is annealed per step (the
DARTS code anneals per epoch), so resuming mid-epoch continues the same curve.
The retraining uses the experiment's `training` section: these searches
select an architecture only. Its `warmup_epochs` also warms the weight lr
up linearly before the cosine starts (0 by default, as in DARTS). The
encodings' lr is constant by default, as in every reference; `arch_lr_schedule`
and `arch_warmup_epochs` schedule it as the weight lr (the README measures
what that does to GDAS on digits_hard).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raysearch.algorithms.base import SearchAlgorithm, SearchResult, derived_forward
from raysearch.algorithms.selection import SelectionConfig, build_selection
from raysearch.schema import spec
from raysearch.distributed import LOCAL
from raysearch.relax import probability_entropy
from raysearch.training import SCHEDULES, TrainingConfig, scheduled_lr, set_lr


@dataclass(frozen=True)
class SupernetConfig(SelectionConfig):
    weight_lr: float = spec(0.025, gt=0.0)  # initial SGD lr of the supernet weights
    weight_lr_min: float = spec(0.001, ge=0.0)  # lr at the end of the cosine annealing
    weight_momentum: float = spec(0.9, ge=0.0, lt=1.0)  # SGD momentum of the weights
    weight_decay: float = spec(3e-4, ge=0.0)  # L2 penalty on the weights
    nesterov: bool = False  # Nesterov momentum for the weights
    grad_clip: float = spec(5.0, gt=0.0)  # max gradient norm of a weight step
    arch_lr: float = spec(3e-4, gt=0.0)  # Adam lr of the encodings
    arch_betas: tuple[float, ...] = spec((0.5, 0.999), ge=0.0, lt=1.0, length=2)  # Adam betas of the encodings
    arch_weight_decay: float = spec(1e-3, ge=0.0)  # Adam (L2) weight decay of the encodings
    arch_init_std: float = spec(1e-3, ge=0.0)  # encodings start as this x N(0, 1)
    arch_lr_schedule: str = spec("constant", choices=SCHEDULES)  # the encodings' lr over the search
    arch_warmup_epochs: int = spec(0, ge=0)  # epochs over which the encodings' lr ramps up linearly to arch_lr


class SupernetSearch(SearchAlgorithm):
    """Encodings `alpha` (one [rows, ops] tensor per space encoding) over a supernet's weights."""

    arch_first = True  # DARTS and DrNAS update the encodings before the weights; GDAS after

    def __init__(self, space, options: SupernetConfig, training: TrainingConfig, total_steps: int, seed: int,
                 device=torch.device("cpu"), steps_per_epoch: int | None = None, dist=LOCAL):
        self.space, self.options, self.training, self.device = space, options, training, torch.device(device)
        self.dist = dist
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch or total_steps
        init = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.net = self.new_supernet(seed)  # the supernet's initial weights
        self.alpha = torch.nn.ParameterDict({
            name: options.arch_init_std * torch.randn(shape, generator=init)
            for name, shape in space.encoding_shapes().items()}).to(self.device)
        self.build_optimizers()
        self.generator = torch.Generator().manual_seed(seed + 1)  # relaxation noise, apart from the init
        self.steps = 0
        self.selection = build_selection(self, options, seed)

    def build_supernet(self):
        return self.space.supernet()

    def new_supernet(self, seed: int):
        """A supernet initialised from `seed` (the same on every rank), prepared for the distributed context."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dist.prepare(self.build_supernet()).to(self.device)

    def build_optimizers(self) -> None:
        o = self.options
        self.weight_optimizer = torch.optim.SGD(
            self.net.parameters(), lr=o.weight_lr, momentum=o.weight_momentum,
            nesterov=o.nesterov and o.weight_momentum > 0, weight_decay=o.weight_decay)
        self.encoding_optimizer = torch.optim.Adam(
            self.alpha.parameters(), lr=o.arch_lr, betas=tuple(o.arch_betas), weight_decay=o.arch_weight_decay)

    # -- the relaxation ----------------------------------------------------------
    def mix(self) -> tuple[dict, dict | None]:
        """Mixing weights (and the active op per row for hard sampling) of one forward pass."""
        return {name: a.softmax(-1) for name, a in self.alpha.items()}, None

    def weight_mix(self) -> tuple[dict, dict | None]:
        """The mixing of a weight step (SDARTS perturbs it); never carries gradients to the encodings."""
        weights, active = self.mix()
        return {name: w.detach() for name, w in weights.items()}, active

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        """The encodings as op probabilities, what the derivation reads."""
        return {name: a.softmax(-1) for name, a in self.alpha.items()}

    # -- what perturbation selection uses (raysearch.algorithms.selection.Selectable) ------------
    def arch_encodings(self) -> dict[str, torch.Tensor]:
        return dict(self.alpha)

    def relaxed_arch(self) -> dict[str, torch.Tensor]:
        return self.mix()[0]

    def tuning_lr(self) -> tuple[float, float]:
        return self.options.weight_lr, self.options.weight_lr_min

    def start_tuning(self) -> None:
        self.weight_optimizer.state.clear()
        set_lr(self.encoding_optimizer, self.options.arch_lr)  # not where a cosine schedule left it (~0)

    def mixture_weight_step(self, batch, weights, lr: float) -> dict[str, float]:
        return self.weight_step(batch, (weights, None), lr)

    @property
    def epoch(self) -> int:
        return self.steps // self.steps_per_epoch

    @property
    def epochs(self) -> int:
        return max(1, self.total_steps // self.steps_per_epoch)

    @property
    def warmup_steps(self) -> int:
        return self.training.warmup_epochs * self.steps_per_epoch

    def weight_lr(self) -> float:
        o = self.options
        return scheduled_lr(o.weight_lr, self.steps, self.total_steps, "cosine", self.warmup_steps, o.weight_lr_min)

    def encoding_lr(self) -> float:
        o = self.options
        return scheduled_lr(o.arch_lr, self.steps, self.total_steps, o.arch_lr_schedule,
                            o.arch_warmup_epochs * self.steps_per_epoch)

    # -- the two halves of a step ------------------------------------------------------
    def _loss(self, batch, weights, active):
        """(loss, logits) on this rank's shard; callers check the loss once it is averaged (`synced`)."""
        x, y = batch
        logits = self.net(x, weights, active)
        return F.cross_entropy(logits, y), logits

    def encoding_loss(self, val) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss(val, *self.mix())

    def encoding_gradients(self, train, val) -> tuple[dict, dict]:
        """First order: the gradient of the validation loss w.r.t. the encodings, averaged over ranks.
        Returns (grads, metrics)."""
        loss, logits = self.encoding_loss(val)
        _, grads = self.synced(loss, torch.autograd.grad(loss, list(self.alpha.values())), "validation loss")
        return dict(zip(self.alpha.keys(), grads)), _metrics("val", loss, logits, val[1])

    def encoding_step(self, train, val) -> dict[str, float]:
        grads, metrics = self.encoding_gradients(train, val)
        set_lr(self.encoding_optimizer, self.encoding_lr())
        self.encoding_optimizer.zero_grad(set_to_none=True)
        for name, a in self.alpha.items():
            a.grad = grads[name]
        self.encoding_optimizer.step()
        return metrics

    def weight_step(self, train, mix=None, lr: float | None = None) -> dict[str, float]:
        """One SGD step of the weights; `mix` and `lr` default to the search's (selection tuning sets them)."""
        set_lr(self.weight_optimizer, self.weight_lr() if lr is None else lr)
        loss, logits = self._loss(train, *(mix or self.weight_mix()))
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Ops a hard sample skipped (GDAS) have no gradient, the same ones on every rank: only the others
        # are averaged. They then get a zero gradient, so that SGD still decays them and moves them by
        # their momentum, as GDAS's reference did (its PyTorch zeroed gradients instead of dropping them)
        # and as AutoHAS does: every weight follows the optimizer every step, sampled or not.
        params = [p for p in self.net.parameters() if p.grad is not None]
        _, grads = self.synced(loss, [p.grad for p in params], "training loss")
        for p, g in zip(params, grads):
            p.grad = g
        for p in self.net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.options.grad_clip)
        self.weight_optimizer.step()
        return _metrics("train", loss, logits, train[1])

    def step(self, train_batch, val_batch) -> dict[str, float]:
        train = tuple(t.to(self.device) for t in train_batch)
        val = tuple(t.to(self.device) for t in val_batch)
        if self.arch_first:
            metrics = {**self.encoding_step(train, val), **self.weight_step(train)}
        else:
            metrics = {**self.weight_step(train), **self.encoding_step(train, val)}
        self.steps += 1
        probabilities = self.probabilities()  # what the derivation reads (DrNAS: the Dirichlet mean)
        metrics["arch_entropy"] = sum(probability_entropy(p).item() for p in probabilities.values()) / len(probabilities)
        return metrics

    # -- derivation ---------------------------------------------------------------
    def derive(self) -> SearchResult:
        return SearchResult(self.space.derive(self.selected_weights()),
                            {"lr": self.training.lr, "weight_decay": self.training.weight_decay})

    def encodings(self) -> dict[str, torch.Tensor]:
        return {name: p.cpu() for name, p in self.probabilities().items()}

    def encoding_labels(self) -> dict[str, tuple]:
        return {name: (list(rows), list(ops)) for name, (rows, ops) in self.space.encodings.items()}

    @torch.no_grad()
    def derived_logits(self, x):
        return derived_forward(self.net, self.space, self.derive().genotype, x)

    # -- checkpointing --------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "alpha": self.alpha.state_dict(),
                "weight_optimizer": self.weight_optimizer.state_dict(),
                "encoding_optimizer": self.encoding_optimizer.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps, "stopped": self.stopped,
                "selection": self.selection_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.alpha.load_state_dict(state["alpha"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.encoding_optimizer.load_state_dict(state["encoding_optimizer"])
        self.generator.set_state(state["generator"])
        self.steps, self.stopped = int(state["steps"]), bool(state["stopped"])
        self.load_selection_state(state["selection"])


def _metrics(prefix: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {f"{prefix}_loss": loss.item(), f"{prefix}_acc": (logits.argmax(1) == y).float().mean().item()}
