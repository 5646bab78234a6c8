"""DrNAS (Chen et al., 2021): mixing weights drawn from Dirichlet(ELU(beta) + 1), pathwise gradients.

Per step: the encoding (beta) step on a validation batch first, then the
weight step, each with a fresh draw shared by all cells. beta is regularised
toward Dir(1) by Adam's weight decay (1e-3, the reference code's default) and,
if `kl_weight` > 0, by an explicit KL(Dir(ELU(beta) + 1) || Dir(1)) term.
Derivation: argmax of the Dirichlet mean (the space's rule on it).

Progressive variant (`progressive: true`, cell spaces): two stages of half
the epochs each. Stage 1 passes 1/k1 of every edge's channels through its ops
(partial channels, k1 = 4); at the stage boundary each edge keeps its
`keep_ops` strongest ops by the Dirichlet mean and widens to 1/k2 of the
channels (k2 = 2). As the reference's `pruning` + `wider` +
`configure_optimizer` do: every new channel of an op's weights copies a
randomly chosen existing one (Net2Wider's copy, without its division), the
SGD momentum buffers are carried and widened the same way, the weight lr
follows one cosine over both stages (not a restart), and the encodings'
Adam goes on with its state. In each stage the encodings stay still for the
first `warmup_epochs` epochs. Choices left open: one seeded channel mapping
per edge serves every channel dimension of its ops (the reference draws one
per layer); pruning ranks ops by the Dirichlet mean, which orders a row's
ops as beta does. In the DARTS space stage 1 mixes all 8 ops (the 5 -> 3 of
the paper is NB201's), and `none` may be among the kept ones: the derivation
excludes it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysearch.algorithms.supernet import SupernetConfig, SupernetSearch, _metrics
from raysearch.relax import dirichlet, dirichlet_kl_to_uniform, dirichlet_mean
from raysearch.schema import ConfigError, spec


# The reference's constants per space (train_search_progressive.py of each space): partial channels per
# stage, ops per edge kept for stage 2, and whether stage 1 already leaves `none` out (its DARTS-space
# PRIMITIVES have no `none`; the reference runs that space at 36 channels, which 6 and 4 divide).
REFERENCE = {"nb201": ((4, 2), 3, False), "darts": ((6, 4), 4, True)}


@dataclass(frozen=True)
class DrNASConfig(SupernetConfig):
    kl_weight: float = spec(0.0, ge=0.0)  # weight of the KL(Dir || Dir(1)) term in the encoding loss (0: off)
    progressive: bool = False  # two stages: partial channels, then pruned and widened edges
    partial_channels: tuple[int, ...] | None = spec(None, ge=1, length=2)  # progressive: k per stage; null: REFERENCE
    keep_ops: int | None = spec(None, ge=1)  # progressive: ops per edge kept for stage 2; null: REFERENCE
    drop_none: bool | None = None  # progressive: `none` left out from stage 1 on; null: REFERENCE (darts: yes)
    warmup_epochs: int = spec(10, ge=0)  # progressive: epochs of each stage before the encodings move

    def reference(self, space_name: str) -> tuple[tuple[int, ...], int, bool]:
        """(partial channels per stage, ops kept for stage 2, drop `none`): the fields, or the reference's
        value for the space where a field is null."""
        partial, keep, drop = REFERENCE.get(space_name, REFERENCE["nb201"])
        return (self.partial_channels or partial, self.keep_ops or keep,
                drop if self.drop_none is None else self.drop_none)

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
        partial = self.reference(space.name)[0]
        for k in partial:
            if channels % k:
                raise ConfigError(f"space.channels: {channels} is not divisible by search.partial_channels "
                                  f"{list(partial)}" + ("" if self.partial_channels else
                                                        f" (the reference's for {space.name}; set them, or the channels)"))


class DrNAS(SupernetSearch):
    def __init__(self, space, options: DrNASConfig, *args, **kwargs):
        self.stage, self.stage_start, self.keep = 1, 0, None
        self.partial, self.keep_ops, drop_none = options.reference(space.name)
        super().__init__(space, options, *args, **kwargs)
        if options.progressive and drop_none:  # stage 1 mixes every op but `none`, as the reference's PRIMITIVES
            self._keep({name: torch.tensor([k for k, op in enumerate(ops) if op != "none"]).repeat(len(rows), 1)
                        for name, (rows, ops) in space.encodings.items()})
        epochs = self.total_steps // self.steps_per_epoch
        self.stage_steps = (epochs // 2) * self.steps_per_epoch  # the second stage starts at this step

    def build_supernet(self):
        o = self.options
        return self.space.supernet(partial=self.partial[self.stage - 1] if o.progressive else 1)

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
            self._second_stage({name: p.topk(self.keep_ops, dim=-1).indices.sort(-1).values
                                for name, p in probabilities.items()})
        return {**super().step(train_batch, val_batch), "stage": float(self.stage)}

    def _second_stage(self, keep: dict[str, torch.Tensor]) -> None:
        """Prune every edge to `keep` ops and widen it to 1/k2 of the channels, weights and momentum
        buffers alike; the weight SGD goes on with the widened state, the encodings' Adam as it was."""
        old_net, old_state = self.net, self.weight_optimizer.state
        self.stage, self.stage_start = 2, self.steps
        self.net = self.new_supernet(self.seed + 2)
        old = dict(old_net.named_parameters())
        edge_of = {f"{prefix}.{name}": k for k, (prefix, edge) in enumerate(self._edge_modules())
                   for name, _ in edge.named_parameters()}
        generator = torch.Generator().manual_seed(self.seed + 3)  # which channels the new ones copy
        mappings: dict[tuple, torch.Tensor] = {}  # (edge, old size, new size) -> new index j copies old m[j]
        encodings = self.encoding_optimizer
        self.build_optimizers()
        self.encoding_optimizer = encodings
        with torch.no_grad():
            for name, param in self.net.named_parameters():
                widened = [_mapping(mappings, (edge_of.get(name), a, b), generator)
                           for a, b in zip(old[name].shape, param.shape)]
                param.copy_(_widened(old[name], widened))
                buffer = old_state.get(old[name], {}).get("momentum_buffer")
                if buffer is not None:
                    self.weight_optimizer.state[param]["momentum_buffer"] = _widened(buffer, widened)
        self._keep(keep)

    def _keep(self, keep: dict[str, torch.Tensor]) -> None:
        """Compute and mix only the ops `keep[name][row]` of every edge from now on."""
        self.keep = keep
        for name, row, edge in self.net.edges():
            edge.keep = keep[name][row].tolist()

    def _edge_modules(self):
        """(module name, edge) of every mixed edge of the supernet, in `edges()` order."""
        names = {id(module): name for name, module in self.net.named_modules()}
        return [(names[id(edge)], edge) for _, _, edge in self.net.edges()]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stage": self.stage, "stage_start": self.stage_start, "keep": self.keep}

    def load_state_dict(self, state: dict) -> None:
        if state["stage"] == 2 and self.stage == 1:  # rebuild the stage-2 supernet before loading into it
            self.steps = int(state["stage_start"])
            self._second_stage(state["keep"])
        super().load_state_dict(state)


def _mapping(mappings: dict, key: tuple, generator: torch.Generator) -> torch.Tensor | None:
    """The index that grows a dimension of `key` = (edge, old size, new size): the old entries, then
    seeded random picks among them (None when the size stays). One per edge and size, so the output
    channels of one layer and the input channels of the next copy the same ones."""
    _, a, b = key
    if a == b:
        return None
    if key not in mappings:
        mappings[key] = torch.cat([torch.arange(a), torch.randint(a, (b - a,), generator=generator)])
    return mappings[key]


def _widened(old: torch.Tensor, mappings: list) -> torch.Tensor:
    """`old` with every dimension that grows indexed by its mapping (Net2Wider's copy, no division)."""
    out = old
    for dim, mapping in enumerate(mappings):
        if mapping is not None:
            out = out.index_select(dim, mapping.to(out.device))
    return out.clone()
