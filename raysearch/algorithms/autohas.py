"""AutoHAS: joint search of the architecture and training hyper-parameters.

Every searched HP is a mixture of basis values h = sum_i P_i B_i, P a Gumbel
hard straight-through sample of its logits (Dong et al., AutoHAS, Algorithm 1).
One step:
  1. sample the architecture and one basis value per HP (one sample per step,
     shared by all cells and by both halves of the step);
  2. take the training gradient g of the sampled architecture on a training batch;
  3. encoding update on a validation batch, with the weights the validation loss
     sees written as W' = W - a*u - a*b*v, where a = sum P_lr B_lr and
     b = sum P_wd B_wd carry the straight-through gradients, and u, v are the
     lr- and lr*wd-independent parts of the SGD step (below). Because one SGD
     step f_B(W) is linear in lr and lr*wd, this equals sum_ij P_i P_j f_{B_ij}(W)
     without materialising one weight copy per basis value: memory does not grow
     with the number of basis values;
  4. apply the sampled SGD step to W (the forward value of W').
Derivation (Eq. 10): argmax for the architecture; a continuous HP is the
softmax-weighted sum of its basis values, without noise. The learning rate is
derived at every step (its basis is the scheduled default lr(t) times the
multipliers), giving the per-step list that retraining replays.

Choices the paper leaves open: Adam betas (0.5, 0.999), as in the DARTS/GDAS
encoding optimizers; no weight decay on the encodings (it would pull continuous
HPs toward the mean of their basis); the gradient g is clipped before the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysearch.algorithms.base import SearchAlgorithm, SearchResult, derived_forward
from raysearch.config import TrainingConfig, spec
from raysearch.relax import entropy, gumbel_hard
from raysearch.training import check_finite, scheduled_lr

MULTIPLIERS = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(frozen=True)
class AutoHASConfig:
    tau: float = spec(10.0, gt=0.0)  # Gumbel softmax temperature (the forward is hard: it scales gradients)
    encoding_lr: float = spec(0.002, gt=0.0)  # Adam lr of all encodings
    encoding_betas: tuple[float, ...] = spec((0.5, 0.999), ge=0.0, lt=1.0, length=2)  # Adam betas of the encodings
    lr_multipliers: tuple[float, ...] = spec(MULTIPLIERS, gt=0.0)  # lr basis = scheduled default lr x these
    wd_multipliers: tuple[float, ...] = spec(MULTIPLIERS, ge=0.0)  # wd basis = default wd x these


class AutoHAS(SearchAlgorithm):
    def __init__(self, space, options: AutoHASConfig, training: TrainingConfig, total_steps: int,
                 seed: int, device=torch.device("cpu"), steps_per_epoch: int | None = None):
        # steps_per_epoch: part of the common constructor; AutoHAS's schedules are per step.
        self.space, self.options, self.training = space, options, training
        self.total_steps, self.device = total_steps, torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the supernet's initial weights
            self.net = space.supernet().to(self.device)
        self.weights = [p for p in self.net.parameters()]
        self.names = [n for n, _ in self.net.named_parameters()]
        self.momentum = [torch.zeros_like(p) for p in self.weights]
        # Encodings are logits kept apart from the weights; all start at zero (uniform).
        self.arch_names = tuple(space.encodings)
        self.enc = torch.nn.ParameterDict({
            **{name: torch.zeros(shape) for name, shape in space.encoding_shapes().items()},
            "lr": torch.zeros(len(options.lr_multipliers)), "wd": torch.zeros(len(options.wd_multipliers)),
        }).to(self.device)
        self.lr_logits, self.wd_logits = self.enc["lr"], self.enc["wd"]
        self.lr_mult = torch.tensor(options.lr_multipliers, device=self.device)
        self.wd_basis = training.weight_decay * torch.tensor(options.wd_multipliers, device=self.device)
        self.encoding_optimizer = torch.optim.Adam(
            self.enc.parameters(), lr=options.encoding_lr,
            betas=tuple(options.encoding_betas), weight_decay=0.0,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.lr_history: list[float] = []  # Eq. 10 learning rate after every step

    # -- the step -------------------------------------------------------------
    def _sgd_parts(self, grads):
        """(u, v) with the SGD step equal to lr * (u + wd * v), for the current momentum."""
        m = self.training.momentum
        u, v = [], []
        for w, g, buf in zip(self.weights, grads, self.momentum):
            if self.training.nesterov:  # step = (1+m)(g + wd w) + m^2 buf
                u.append((1 + m) * g + m * m * buf)
                v.append((1 + m) * w.detach())
            else:  # step = m buf + g + wd w
                u.append(m * buf + g)
                v.append(w.detach())
        return u, v

    def step(self, train_batch, val_batch) -> dict[str, float]:
        x, y = (t.to(self.device) for t in train_batch)
        xv, yv = (t.to(self.device) for t in val_batch)
        # (1) one sample of every encoding, shared by all cells and both halves of the step
        tau = self.options.tau
        arch_w, active = {}, {}
        for name in self.arch_names:
            arch_w[name], index = gumbel_hard(self.enc[name], tau, self.generator)
            active[name] = index.tolist()  # one host copy, shared by both forward passes
        lr_p, _ = gumbel_hard(self.lr_logits, tau, self.generator)
        wd_p, _ = gumbel_hard(self.wd_logits, tau, self.generator)
        base_lr = scheduled_lr(self.training.lr, self.steps, self.total_steps, self.training.lr_schedule)

        # (2) training gradient of the sampled architecture
        logits = self.net(x, {k: w.detach() for k, w in arch_w.items()}, active)
        loss = F.cross_entropy(logits, y)
        check_finite(loss, "training loss", self.steps)
        # Unsampled ops get no gradient: zeros, so their weights still decay and keep momentum.
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True, materialize_grads=True)
        if self.training.grad_clip is not None:
            norm = torch.nn.utils.get_total_norm(grads)
            scale = (self.training.grad_clip / (norm + 1e-6)).clamp(max=1.0)
            grads = [g * scale for g in grads]
        u, v = self._sgd_parts(grads)

        # (3) encoding step through W' = W - a u - a b v
        a = base_lr * (lr_p * self.lr_mult).sum()
        b = (wd_p * self.wd_basis).sum()
        updated = {n: w.detach() - a * ui - (a * b) * vi for n, w, ui, vi in zip(self.names, self.weights, u, v)}
        val_logits = functional_call(self.net, updated, (xv, arch_w, active))
        val_loss = F.cross_entropy(val_logits, yv)
        check_finite(val_loss, "validation loss", self.steps)
        self.encoding_optimizer.zero_grad(set_to_none=True)
        val_loss.backward()
        self.encoding_optimizer.step()

        # (4) the sampled SGD step, in place: W <- W - lr (u + wd v)
        lr, wd = a.item(), b.item()
        with torch.no_grad():
            for w, g, buf, ui, vi in zip(self.weights, grads, self.momentum, u, v):
                buf.mul_(self.training.momentum).add_(g + wd * w)
                w.sub_(lr * (ui + wd * vi))

        # Eq. 10 with the encodings just updated, at this step's scheduled lr.
        lr_factor, _ = self._derived_hparams()
        self.lr_history.append(base_lr * lr_factor)
        self.steps += 1
        return {
            "train_loss": loss.item(),
            "train_acc": (logits.argmax(1) == y).float().mean().item(),
            "val_loss": val_loss.item(),
            "val_acc": (val_logits.argmax(1) == yv).float().mean().item(),
            "sampled_lr": lr, "sampled_wd": wd,
            "arch_entropy": sum(entropy(self.enc[n]).item() for n in self.arch_names) / len(self.arch_names),
            "lr_entropy": entropy(self.lr_logits).item(),
            "wd_entropy": entropy(self.wd_logits).item(),
        }

    # -- derivation -------------------------------------------------------------
    @torch.no_grad()
    def _derived_hparams(self) -> tuple[float, float]:
        """Eq. 10: (lr as a multiple of the scheduled default, weight decay), softmax-weighted, no noise."""
        lr_factor = (self.lr_logits.softmax(-1) * self.lr_mult).sum().item()
        return lr_factor, (self.wd_logits.softmax(-1) * self.wd_basis).sum().item()

    def derive(self) -> SearchResult:
        genotype = self.space.derive({name: self.enc[name].detach() for name in self.arch_names})
        lr_factor, wd = self._derived_hparams()
        return SearchResult(genotype, {"lr": list(self.lr_history), "lr_factor": lr_factor, "weight_decay": wd})

    def encodings(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().softmax(-1).cpu() for name, t in self.enc.items()}

    def encoding_labels(self) -> dict[str, tuple]:
        return {**{name: (list(rows), list(ops)) for name, (rows, ops) in self.space.encodings.items()},
                "lr": (None, [f"x{m:g}" for m in self.options.lr_multipliers]),
                "wd": (None, [f"x{m:g}" for m in self.options.wd_multipliers])}

    @torch.no_grad()
    def derived_logits(self, x):
        return derived_forward(self.net, self.space, self.derive().genotype, x)

    # -- checkpointing -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(), "momentum": [b.clone() for b in self.momentum],
            "encodings": self.enc.state_dict(), "optimizer": self.encoding_optimizer.state_dict(),
            "generator": self.generator.get_state(), "steps": self.steps, "lr_history": list(self.lr_history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.enc.load_state_dict(state["encodings"])
        with torch.no_grad():
            for buf, saved in zip(self.momentum, state["momentum"]):
                buf.copy_(saved)
        self.encoding_optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps, self.lr_history = int(state["steps"]), list(state["lr_history"])
