"""Sequential DHA, the DHA paper's baseline: search the architecture first with any algorithm of the
registry, then train that architecture from scratch with DHA's online augmentation and hyper-parameter
steps (DHA with `search_arch: false`); the model at the end is the result.

The first `architecture_share` of `search.epochs` run the architecture search (`architecture_search`
with its `architecture_options`, under the experiment's `training` section); then its derived genotype
is fixed and a fresh network (new weights, seeded) trains for the remaining epochs.
`search_augmentation: false` or `search_hparams: false` turn those parts of the second stage off.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import yaml

from raysearch.algorithms.base import SearchAlgorithm, SearchResult
from raysearch.algorithms.dha import DHA, POLICY, TRAIN_DATA, DHAConfig
from raysearch.algorithms.table import ARCHITECTURE_SEARCHES
from raysearch.distributed import LOCAL
from raysearch.schema import ConfigError, build, spec
from raysearch.training import TrainingConfig


@dataclass(frozen=True)
class SequentialDHAConfig(DHAConfig):
    architecture_search: str = spec("autohas", choices=ARCHITECTURE_SEARCHES)  # the first stage's algorithm
    architecture_options: tuple[str, ...] | None = None  # its options as FIELD=VALUE (e.g. arch_lr=0.01); null: defaults
    architecture_share: float = spec(0.5, gt=0.0, lt=1.0)  # share of search.epochs the first stage runs (>= 1)
    train_data: str = spec("search_train", choices=TRAIN_DATA)  # the first stage's search needs search-val held apart

    def check_space(self, space) -> None:
        """No ISTA codes here: the first stage searches, the second trains a fixed cell."""

    def check(self, search) -> None:
        if not self.search_arch or self.genotype is not None:
            raise ConfigError("search.search_arch: Sequential DHA searches the architecture in its first stage "
                              "(for a fixed genotype use dha with search_arch: false)")
        super().check(search)
        self.first_stage_options()  # its errors name the field, at load time

    def first_stage_options(self):
        """The first stage's options dataclass, from `architecture_options` over its defaults."""
        values = {}
        for item in self.architecture_options or ():
            name, sep, text = item.partition("=")
            if not sep:
                raise ConfigError(f"search.architecture_options: expected FIELD=VALUE, got {item!r}")
            values[name.strip()] = yaml.safe_load(text)
        config_type = ARCHITECTURE_SEARCHES[self.architecture_search].config_type
        known = [f.name for f in fields(config_type)]
        for name in values:
            if name not in known:  # said here: build_named would list the outer section's fields instead
                raise ConfigError(f"search.architecture_options: {name} is not an option of "
                                  f"{self.architecture_search}; its options: {', '.join(known)}")
        return build(config_type, values, "search.architecture_options")


class SequentialDHA(SearchAlgorithm):
    """The first stage's search, then DHA training its genotype; everything not defined here (e.g. its
    optimizers, for the contract tests and the selection) is the current stage's."""

    final_model = True

    def __init__(self, space, options: SequentialDHAConfig, training: TrainingConfig, total_steps: int, seed: int,
                 device=torch.device("cpu"), steps_per_epoch: int | None = None, dist=LOCAL):
        self.space, self.options, self.training, self.device, self.dist = space, options, training, device, dist
        self.seed, self.total_steps = seed, total_steps
        self.steps_per_epoch = steps_per_epoch or total_steps
        epochs = max(1, total_steps // self.steps_per_epoch)
        first_epochs = min(max(1, round(options.architecture_share * epochs)), epochs)
        entry = ARCHITECTURE_SEARCHES[options.architecture_search]
        self.first = entry.build(space, options.first_stage_options(), training,
                                 total_steps=first_epochs * self.steps_per_epoch, seed=seed, device=device,
                                 steps_per_epoch=self.steps_per_epoch, dist=dist)
        # built now (its seeded initial weights apart from the first stage's); it gets its cell later
        dha = {f.name: getattr(options, f.name) for f in fields(DHAConfig)}
        self.training_stage = DHA(space, DHAConfig(**{**dha, "search_arch": False, "genotype": None}), training,
                                  total_steps=total_steps - self.first.total_steps, seed=seed + 7919,
                                  device=device, steps_per_epoch=self.steps_per_epoch, dist=dist)
        self.second: DHA | None = None  # the training stage, once it has its cell
        self.steps = 0

    def __getattr__(self, name):
        if name in ("first", "second"):  # not set yet (during __init__ or unpickling)
            raise AttributeError(name)
        return getattr(self.stage, name)

    @property
    def stage(self) -> SearchAlgorithm:
        return self.first if self.second is None else self.second

    @property
    def stages(self) -> tuple[SearchAlgorithm, SearchAlgorithm]:
        return self.first, self.training_stage

    def _start_training(self, genotype: str) -> None:
        self.training_stage.fix_architecture(genotype)
        self.second = self.training_stage

    def step(self, train_batch, val_batch) -> dict[str, float]:
        if self.second is None and self.steps >= self.first.total_steps:
            self._start_training(self.first.derive().genotype.to_string())
        metrics = self.stage.step(train_batch, val_batch)
        self.steps += 1
        return {**metrics, "stage": 1.0 + (self.second is not None)}

    def end_epoch(self, val_batch) -> dict[str, float]:
        return self.stage.end_epoch(val_batch)

    def derive(self) -> SearchResult:
        return self.stage.derive()

    def probabilities(self) -> dict[str, torch.Tensor]:
        return self.first.probabilities()

    def encodings(self) -> dict[str, torch.Tensor]:
        """The first stage's encodings (still once it ended), then also the second stage's pair policy."""
        policy = {} if self.second is None else {POLICY: self.second.encodings()[POLICY]}
        return {**self.first.encodings(), **policy}

    def encoding_labels(self) -> dict[str, tuple]:
        return {**self.first.encoding_labels(), POLICY: DHA.policy_labels()}

    @torch.no_grad()
    def derived_logits(self, x):
        return self.stage.derived_logits(x)

    def final_network(self, images: torch.Tensor):
        """The training stage's model; None in the first stage, which searches the cell the model will have."""
        return None if self.second is None else self.second.final_network(images)

    def state_dict(self) -> dict:
        return {"first": self.first.state_dict(), "steps": self.steps,
                "second": None if self.second is None else self.second.state_dict(),
                "genotype": None if self.second is None else self.second.derive().genotype.to_string()}

    def load_state_dict(self, state: dict) -> None:
        self.first.load_state_dict(state["first"])
        self.steps = int(state["steps"])
        self.second = None
        if state["second"] is not None:
            self._start_training(state["genotype"])
            self.second.load_state_dict(state["second"])
