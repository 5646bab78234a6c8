"""The joint (architecture + hyper-parameter) space that black-box searchers sample.

Defined once per search space, from the space's `choices()` (one categorical
per architecture decision) plus log-uniform training hyper-parameters; the
Tune and ConfigSpace forms are converted from it (`raysearch.baselines.sweep`),
and our own searchers (REA, RANK-NOSH) sample, mutate and featurize it here.
The dimension types (`Categorical`, `LogUniform`, `Uniform`, `IntUniform`) also
describe a meta-sweep's space (`raysearch.meta_sweep`).
A configuration is a flat dict: `{"edge_1_0": "nor_conv_3x3", ..., "lr": 0.05, "weight_decay": 3e-4}`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Categorical:
    name: str  # config key
    choices: tuple[str | float, ...]  # allowed values: strings or numbers (what Tune and ConfigSpace take as is)


@dataclass(frozen=True)
class LogUniform:
    name: str  # config key
    low: float  # inclusive bounds, sampled uniformly in log space
    high: float

    def unit(self, value: float) -> float:
        """Position of `value` in [0, 1] on the log scale (the predictor's feature)."""
        span = math.log(self.high) - math.log(self.low)
        return 0.0 if span == 0 else (math.log(value) - math.log(self.low)) / span


@dataclass(frozen=True)
class Uniform:
    name: str  # config key
    low: float  # inclusive bounds, sampled uniformly
    high: float


@dataclass(frozen=True)
class IntUniform:
    name: str  # config key
    low: int  # inclusive bounds, integers sampled uniformly
    high: int


HPARAMS = ("lr", "weight_decay")


class JointSpace:
    """Architecture categoricals of `space` followed by the searched training hyper-parameters."""

    def __init__(self, space, lr_range: tuple[float, float], weight_decay_range: tuple[float, float]):
        self.space = space
        self.arch = tuple(Categorical(key, tuple(ops)) for key, ops in space.choices().items())
        self.hparams = (LogUniform("lr", *lr_range), LogUniform("weight_decay", *weight_decay_range))
        self.dims = self.arch + self.hparams

    def sample(self, rng: random.Random) -> dict:
        return {dim.name: self._draw(dim, rng) for dim in self.dims}

    def mutate(self, config: dict, rng: random.Random) -> dict:
        """A copy with one dimension changed: another op on one edge, or one HP redrawn."""
        dim = rng.choice(self.dims)
        child = dict(config)
        if isinstance(dim, Categorical):
            child[dim.name] = rng.choice([c for c in dim.choices if c != config[dim.name]])
        else:
            child[dim.name] = self._draw(dim, rng)
        return child

    @staticmethod
    def _draw(dim, rng: random.Random):
        if isinstance(dim, Categorical):
            return rng.choice(dim.choices)
        return math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))

    @property
    def num_features(self) -> int:
        return sum(len(dim.choices) for dim in self.arch) + len(self.hparams)

    def features(self, config: dict) -> list[float]:
        """One-hot per categorical (NB201: the 6x5 cell encoding) + each HP's log-scale position."""
        out: list[float] = []
        for dim in self.arch:
            out += [1.0 if config[dim.name] == choice else 0.0 for choice in dim.choices]
        return out + [dim.unit(config[dim.name]) for dim in self.hparams]

    def decode(self, config: dict):
        """(genotype, {"lr": ..., "weight_decay": ...}) of a configuration."""
        return self.space.from_choices(config), {name: float(config[name]) for name in HPARAMS}

    def encode(self, genotype, hparams: dict) -> dict:
        return {**self.space.to_choices(genotype), **{name: hparams[name] for name in HPARAMS}}
