"""DrNAS (Chen et al., 2021): mixing weights drawn from Dirichlet(ELU(beta) + 1), pathwise gradients.

Per step: the encoding (beta) step on a validation batch first, then the
weight step, each with a fresh draw shared by all cells. beta is regularised
toward Dir(1) by Adam's weight decay (1e-3, the reference code's default) and,
if `kl_weight` > 0, by an explicit KL(Dir(ELU(beta) + 1) || Dir(1)) term.
Derivation: argmax of the Dirichlet mean (the space's rule on it).

Progressive variant (`progressive: true`, cell spaces): two stages of half
the epochs each. Stage 1 passes 1/k1 of every edge's channels through its ops
(partial channels, k1 = 4); at the stage boundary each edge keeps its
`keep_ops` strongest ops by the Dirichlet mean, the edges widen to 1/k2 of
the channels (k2 = 2), and both optimizers start fresh. In each stage the
encodings stay still for the first `warmup_epochs` epochs. Choices left
open: widening copies each stage-1 weight tensor into the corner of its wider
stage-2 tensor (the new channels start from the seeded default init); the
weight lr's cosine restarts with the fresh optimizer, over each stage's
steps; pruning ranks ops by the Dirichlet mean, which orders a row's ops as
beta does. In the DARTS space stage 1 mixes all 8 ops (the 5 -> 3 of the
paper is NB201's), and `none` may be among the kept ones: the derivation
excludes it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysearch.algorithms.supernet import SupernetConfig, SupernetSearch, _metrics
from raysearch.training import scheduled_lr
from raysearch.schema import ConfigError, spec
from raysearch.relax import dirichlet, dirichlet_kl_to_uniform, dirichlet_mean


@dataclass(frozen=True)
class DrNASConfig(SupernetConfig):
    kl_weight: float = spec(0.0, ge=0.0)  # weight of the KL(Dir || Dir(1)) term in the encoding loss (0: off)
    progressive: bool = False  # two stages: partial channels, then pruned and widened edges
    partial_channels: tuple[int, ...] = spec((4, 2), ge=1, length=2)  # progressive: channel divisor k per stage
    keep_ops: int = spec(3, ge=1)  # progressive: ops per edge kept for the second stage
    warmup_epochs: int = spec(10, ge=0)  # progressive: epochs of each stage before the encodings move

    def check(self, search) -> None:
        if self.progressive and search.epochs < 2:
            raise ConfigError("search.epochs: progressive DrNAS needs at least 2 epochs (2 stages)")

    def check_space(self, space) -> None:
        if not self.progressive:
            return
        channels = getattr(space.options, "channels", None)
        if channels is None:
            raise ConfigError(f"search.progressive: partial channels need a cell space with space.channels "
                              f"(nb201, darts), not {space.name}")
        for k in self.partial_channels:
            if channels % k:
                raise ConfigError(f"space.channels: {channels} is not divisible by search.partial_channels "
                                  f"{list(self.partial_channels)}")


class DrNAS(SupernetSearch):
    def __init__(self, *args, **kwargs):
        self.stage, self.stage_start, self.keep = 1, 0, None
        super().__init__(*args, **kwargs)
        epochs = self.total_steps // self.steps_per_epoch
        self.stage_steps = (epochs // 2) * self.steps_per_epoch  # the second stage starts at this step

    def build_supernet(self):
        o = self.options
        return self.space.supernet(partial=o.partial_channels[self.stage - 1] if o.progressive else 1)

    def weight_lr(self) -> float:
        if not self.options.progressive:
            return super().weight_lr()
        o = self.options
        length = self.stage_steps if self.stage == 1 else self.total_steps - self.stage_steps
        warmup = self.warmup_steps if self.stage == 1 else 0  # the warm-up opens the search, not each stage
        return scheduled_lr(o.weight_lr, self.steps - self.stage_start, length, "cosine", warmup, o.weight_lr_min)

    # -- relaxation -----------------------------------------------------------------
    def mix(self):
        keep = self.keep or {}
        return {name: dirichlet(b, self.generator, keep.get(name)) for name, b in self.alpha.items()}, None

    def probabilities(self):
        keep = self.keep or {}
        return {name: dirichlet_mean(b.detach(), keep.get(name)) for name, b in self.alpha.items()}

    def encoding_loss(self, val):
        loss, logits = super().encoding_loss(val)
        if self.options.kl_weight > 0:
            loss = loss + self.options.kl_weight * sum(dirichlet_kl_to_uniform(b) for b in self.alpha.values())
        return loss, logits

    # -- progressive stages -------------------------------------------------------------
    def encoding_step(self, train, val):
        o = self.options
        if o.progressive and self.steps - self.stage_start < o.warmup_epochs * self.steps_per_epoch:
            with torch.no_grad():  # the encodings wait for the weights of this stage to warm up
                loss, logits = self.encoding_loss(val)
            self.synced(loss, [], "validation loss")
            return _metrics("val", loss, logits, val[1])
        return super().encoding_step(train, val)

    def step(self, train_batch, val_batch):
        if self.options.progressive and self.stage == 1 and self.steps == self.stage_steps:
            probabilities = self.probabilities()
            self._second_stage({name: p.topk(self.options.keep_ops, dim=-1).indices.sort(-1).values
                                for name, p in probabilities.items()})
        return {**super().step(train_batch, val_batch), "stage": float(self.stage)}

    def _second_stage(self, keep: dict[str, torch.Tensor]) -> None:
        """Prune every edge to `keep` ops, widen it to 1/k2 of the channels, restart both optimizers."""
        old = dict(self.net.named_parameters())
        self.stage, self.stage_start, self.keep = 2, self.steps, keep
        self.net = self.new_supernet(self.seed + 2)  # the new channels' initial weights
        with torch.no_grad():
            for name, param in self.net.named_parameters():
                param[tuple(slice(0, n) for n in old[name].shape)] = old[name]
        for name, row, edge in self.net.edges():
            edge.keep = keep[name][row].tolist()
        self.build_optimizers()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stage": self.stage, "stage_start": self.stage_start, "keep": self.keep}

    def load_state_dict(self, state: dict) -> None:
        if state["stage"] == 2 and self.stage == 1:  # rebuild the stage-2 supernet before loading into it
            self.steps = int(state["stage_start"])
            self._second_stage(state["keep"])
        super().load_state_dict(state)
