"""A comparison's config: methods (experiments), one dataset and space for all, an equal budget, seeds.

    name: compare_digits
    compare: {budget_seconds: 30, seeds: 3, retrain_seeds: 2, anytime: [0.25, 0.5]}
    shared:                       # merged over every method's experiment
      data: {dataset: digits_hard}
      space: {name: nb201, channels: 8, ...}
      retrain: {epochs: 10, batch_size: 64}
    methods:
      autohas: autohas_nb201_digits_hard.yaml                  # an experiment file (beside this one or in configs/)
      darts-pt: {config: darts_nb201_digits.yaml, set: {search.selection: perturbation}}

Each method is an experiment config of `raysearch run` (a differentiable
search or a baseline) or of `raysearch sweep` (searches over their own
meta-hyper-parameters, the experiment's `sweep:` section); `shared` makes the comparison fair: its `space`
replaces each method's (one space for all), its other sections are merged
key by key (so a method keeps, say, its own `data.val_fraction`: the
search-train / search-val split is part of a search's recipe, and the test
split depends only on `data.test_fraction` and `data.split_seed`). The stored
form (compare.yaml in the run directory) holds every method's merged
experiment inline, so `raysearch resume` needs none of the files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from raysearch.algorithms import ALGORITHMS
from raysearch.config import ExperimentConfig, apply_fields, apply_override, from_dict, read_yaml
from raysearch.schema import ConfigError, build, spec

STATE_FILE = "comparison.json"  # in a comparison's run directory: what `raysearch resume` needs beyond compare.yaml
CONFIG_FILE = "compare.yaml"  # the comparison as it runs, every method's experiment inline
SHARED_SECTIONS = ("data", "space", "training", "retrain", "ray", "tracking")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def cell_dir(run_dir: Path, method: str, seed_index: int) -> Path:
    """The folder of one method x seed of a comparison: its Tune storage, artifacts, rows and model."""
    return Path(run_dir) / "cells" / method / f"seed{seed_index}"


@dataclass(frozen=True)
class CompareConfig:
    """The budget and the seeds, the same for every method."""

    budget_seconds: float = spec(60.0, gt=0.0)  # wall seconds of search per method and seed, on the same resources
    seeds: int = spec(3, ge=1)  # search seeds per method: seed index i runs every method with `seed` + i (paired)
    seed: int = spec(0, ge=0)  # the search seed of seed index 0
    retrain_seeds: int = spec(2, ge=1)  # k: every choice is retrained k times, with seeds 0 .. k-1 (paired too)
    anytime: tuple[float, ...] = spec((0.25, 0.5), gt=0.0, lt=1.0)  # budget fractions whose incumbents are retrained as well as the end's

    @property
    def fractions(self) -> tuple[float, ...]:
        """The budget points, as fractions of the budget, ending at 1."""
        return (*sorted(set(self.anytime)), 1.0)


@dataclass(frozen=True)
class Comparison:
    """A loaded comparison: its settings and every method's experiment (shared sections applied)."""

    name: str  # the comparison's name: run directory prefix and MLflow experiment
    compare: CompareConfig
    methods: dict  # method name -> its experiment as a dict (ExperimentConfig.to_dict() layout), in order
    tracking: dict  # the shared tracking section (the comparison's MLflow experiment and server)

    def experiment(self, method: str, seed_index: int, cpus_per_search: float | None = None) -> ExperimentConfig:
        """The experiment of `method` at seed index `seed_index`: its seed, the budget, and, for a
        differentiable search in one trial, `cpus_per_search` CPUs (the machine a baseline's trials share)."""
        data = self.methods[method]
        values = {"search.budget_seconds": self.compare.budget_seconds}
        if cpus_per_search and is_search(data) and data.get("ray", {}).get("workers", 1) == 1 and not data.get("sweep"):
            values["ray.cpus_per_trial"] = cpus_per_search  # a sweep's searches share them, as its config says
        data = apply_fields({**data, "name": f"{self.name}-{method}", "seed": self.compare.seed + seed_index}, values)
        return from_dict(data)

    def to_dict(self) -> dict:
        return {"name": self.name, "compare": _plain(dataclasses.asdict(self.compare)), "shared": {
            "tracking": self.tracking}, "methods": {name: {"experiment": exp} for name, exp in self.methods.items()}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def is_search(experiment: dict) -> bool:
    """Whether an experiment dict runs a differentiable search (not a black-box baseline)."""
    return experiment.get("search", {}).get("algorithm", "autohas") in ALGORITHMS


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _experiment_file(name: str, base: Path, what: str) -> Path:
    """A method's experiment file: as given, beside the comparison's file, or in the shipped configs/."""
    for candidate in (Path(name), base / name, CONFIG_DIR / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{what}: no such experiment file {name} (looked beside {base} and in {CONFIG_DIR})")


def _merge(experiment: dict, shared: dict) -> dict:
    out = dict(experiment)
    for section, values in shared.items():
        out[section] = dict(values) if section == "space" else {**(out.get(section) or {}), **values}
    return out


def _method(name: str, entry, base: Path, shared: dict) -> dict:
    """A method's experiment dict, validated: the file or inline experiment, `shared`, then `set`."""
    what = f"methods.{name}"
    if isinstance(entry, str):
        entry = {"config": entry}
    if not isinstance(entry, dict) or len({"config", "experiment"} & set(entry)) != 1 or (
            set(entry) - {"config", "experiment", "set"}):
        raise ConfigError(f"{what}: expected an experiment file name, or a mapping with `config` (a file) or "
                          f"`experiment` (inline) and optionally `set` ({{dotted field: value}}); got {entry!r}")
    experiment = (read_yaml(_experiment_file(entry["config"], base, what), what) if "config" in entry
                  else entry["experiment"])
    if not isinstance(experiment, dict):
        raise ConfigError(f"{what}.experiment: expected a mapping, got {experiment!r}")
    overrides = entry.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{what}.set: expected a mapping of dotted fields to values, got {overrides!r}")
    experiment = apply_fields(_merge(experiment, shared), overrides)
    experiment.setdefault("name", name)
    try:
        config = from_dict(experiment)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None
    return config.to_dict()


def comparison_from_dict(data, base: Path = Path(".")) -> Comparison:
    """A Comparison from its YAML mapping; experiment file names resolve against `base`."""
    if not isinstance(data, dict):
        raise ConfigError(f"comparison: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "compare", "shared", "methods"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field of a comparison; accepted: name, compare, shared, methods")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError("name: required field is missing (the comparison's name)")
    compare = build(CompareConfig, data.get("compare"), "compare")
    shared = data.get("shared") or {}
    if not isinstance(shared, dict) or set(shared) - set(SHARED_SECTIONS):
        raise ConfigError(f"shared: expected a mapping of sections among {', '.join(SHARED_SECTIONS)}; got "
                          f"{sorted(shared) if isinstance(shared, dict) else shared!r}")
    for section, values in shared.items():
        if not isinstance(values, dict):
            raise ConfigError(f"shared.{section}: expected a mapping, got {values!r}")
    methods = data.get("methods")
    if not isinstance(methods, dict) or len(methods) < 2:
        raise ConfigError("methods: expected a mapping of at least two method names to experiment files, "
                          f"e.g. {{autohas: autohas_nb201_digits_hard.yaml, random: random_nb201_digits.yaml}}; "
                          f"got {methods!r}")
    bad = [m for m in methods if not isinstance(m, str) or not m.replace("-", "").replace("_", "").isalnum()]
    if bad:
        raise ConfigError(f"methods.{bad[0]}: method names take letters, digits, - and _ only (they name folders)")
    resolved = {name: _method(name, entry, base, shared) for name, entry in methods.items()}
    return Comparison(data["name"], compare, resolved, dict(shared.get("tracking") or {}))


def load_comparison(path, overrides=()) -> Comparison:
    """Load a comparison YAML, apply `KEY=VALUE` overrides (e.g. compare.budget_seconds=10,
    shared.retrain.epochs=2), validate it and every method's experiment."""
    path = Path(path)
    data = read_yaml(path, "comparison")
    for assignment in overrides:
        apply_override(data, assignment)
    return comparison_from_dict(data, path.parent)

