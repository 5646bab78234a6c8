"""Experiment configuration: YAML -> validated, typed, frozen dataclasses.

Every error names the dotted field and what it accepts, and is raised before
Ray starts or any resource is taken.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from raysearch.algorithms import ALGORITHMS
from raysearch.baselines import BASELINES
from raysearch.data import DATASETS, DataConfig
from raysearch.distributed import BATCH_NORMS
from raysearch.schema import ConfigError, build, build_named, spec
from raysearch.spaces import SPACES
from raysearch.training import TrainingConfig

__all__ = ["ConfigError", "DataConfig", "ExperimentConfig", "TrainingConfig", "from_dict", "load_config", "spec"]

# search.algorithm name -> the dataclass of its own options: differentiable searches and baselines share it
SEARCH_OPTIONS = {**{name: entry.config_type for name, entry in ALGORITHMS.items()},
                  **{name: entry.config_type for name, entry in BASELINES.items()}}
SPACE_OPTIONS = {name: entry.config_type for name, entry in SPACES.items()}
DATASET_OPTIONS = {name: entry.config_type for name, entry in DATASETS.items()}


@dataclass(frozen=True)
class SpaceConfig:
    """The space's name; its own options (widths, depths) sit beside it in YAML."""

    name: str = spec("nb201", choices=SPACES)  # name in raysearch.spaces.SPACES
    options: typing.Any = None  # the space's config dataclass, built from the remaining keys


@dataclass(frozen=True)
class RetrainConfig:
    enabled: bool = True  # retrain the derived configuration from scratch and test it
    epochs: int | None = spec(None, ge=1)  # retraining epochs; null = search.epochs
    batch_size: int | None = spec(None, ge=1)  # retraining mini-batch size; null = search.batch_size


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # Ray cluster address; null starts a local Ray with this machine's CPUs
    num_cpus: int | None = spec(None, ge=1)  # CPUs of a local Ray; null = all
    cpus_per_trial: float = spec(1.0, gt=0.0)  # CPUs reserved by each trial (a sharded search's: none, its workers')
    gpus_per_trial: float = spec(0.0, ge=0.0)  # GPUs reserved by each trial (the device follows; sharded: none)
    workers: int = spec(1, ge=1)  # Ray Train workers one differentiable search is sharded over (1: in the trial)
    cpus_per_worker: float = spec(1.0, gt=0.0)  # CPUs of each Train worker (workers > 1)
    gpus_per_worker: float = spec(0.0, ge=0.0)  # GPUs of each Train worker (workers > 1; NCCL when > 0, else gloo)
    batch_norm: str = spec("per_shard", choices=BATCH_NORMS)  # supernet BN statistics over workers: per shard or global
    max_failures: int = spec(2, ge=0)  # restarts of a failed trial from its last checkpoint
    storage_path: str | None = None  # Tune storage shared by all nodes (NFS path or s3://...); null = <run dir>/ray


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = None  # MLflow tracking URI; null = sqlite store inside the run directory
    experiment: str | None = None  # MLflow experiment name; null = the experiment's name
    timeout_s: float = spec(5.0, gt=0.0)  # per-request timeout for a remote tracking server
    retries: int = spec(1, ge=0)  # retries per request before MLflow is switched off for the run
    register_model: str | None = None  # register the run's model under this name in MLflow's Model Registry; null: don't


@dataclass(frozen=True)
class SearchConfig:
    """Common search fields; the algorithm's own options sit beside them in YAML."""

    algorithm: str = spec("autohas", choices=SEARCH_OPTIONS)  # a search in ALGORITHMS or a baseline in BASELINES
    epochs: int = spec(30, ge=1)  # search epochs (passes over search-train); baselines: epochs per trial
    batch_size: int = spec(64, ge=1)  # mini-batch size for search and retraining
    budget_seconds: float | None = spec(None, gt=0.0)  # wall-clock cap of the search phase; null = none
    options: typing.Any = None  # the algorithm's config dataclass, built from the remaining keys


SWEEP_KINDS = ("choice", "uniform", "loguniform", "randint")  # distributions of a swept field
SWEEP_ALGORITHMS = ("random", "asha", "bohb")  # keys of raysearch.meta_sweep.SWEEPERS
SWEEP_METRICS = {"derived_val_acc": "max", "derived_val_loss": "min"}  # what every search reports, and its mode
UNSWEPT = {  # fields that are not meta-hyper-parameters of one search, and why
    "search.algorithm": "every search of a sweep runs the config's algorithm",
    "search.epochs": "it is the fidelity ASHA and BOHB cut; set it once under search",
    "space.name": "the space's other fields depend on it",
    "search.budget_seconds": "it caps the whole sweep's wall time; set it once under search",
}


@dataclass(frozen=True)
class SweepParam:
    """One swept field; YAML `field: {kind: values}` under sweep.params."""

    field: str  # dotted field of the experiment, e.g. search.tau
    kind: str  # one of SWEEP_KINDS
    values: tuple  # choice: the values; uniform, loguniform, randint: (low, high), randint's high included


@dataclass(frozen=True)
class SweepConfig:
    """`raysearch sweep`: Ray Tune over a differentiable search's own meta-hyper-parameters."""

    params: tuple[SweepParam, ...] = ()  # the swept fields (YAML: a mapping field -> {kind: values}), >= 1
    algorithm: str = spec("asha", choices=SWEEP_ALGORITHMS)  # searcher + scheduler, as in the baselines table
    num_samples: int = spec(8, ge=1)  # searches to run (each one a whole search)
    max_concurrent: int | None = spec(None, ge=1)  # searches at once; null = as many as the cluster fits
    metric: str = spec("derived_val_acc", choices=tuple(SWEEP_METRICS))  # scheduled on per epoch, then selects
    grace_period: int = spec(1, ge=1)  # asha: epochs every search gets before it may be stopped
    reduction_factor: float = spec(3.0, gt=1.0)  # asha, bohb: eta, each rung keeps the top 1/eta

    @property
    def mode(self) -> str:
        return SWEEP_METRICS[self.metric]

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["params"] = {p.field: {p.kind: _lists(p.values)} for p in self.params}
        return out


@dataclass(frozen=True)
class ExperimentConfig:
    name: str  # experiment name: run directory prefix and default MLflow experiment
    seed: int = spec(0, ge=0)  # seeds weights, sampling and batch order of the search
    data: DataConfig = DataConfig()
    space: SpaceConfig = None  # built by from_dict: the space's options depend on its name
    search: SearchConfig = None  # built by from_dict: the algorithm's options depend on its name
    training: TrainingConfig = TrainingConfig()
    retrain: RetrainConfig = RetrainConfig()
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    sweep: SweepConfig | None = None  # built by from_dict: a `raysearch sweep` over the search's meta-HPs

    def to_dict(self) -> dict:
        """Plain nested dict in the YAML layout (algorithm options flattened into `search`; `sweep`
        only when there is one, so a plain experiment's dict is the same as before sweeps existed)."""
        out = dataclasses.asdict(self)
        for section in ("data", "space", "search"):
            out[section].update(out[section].pop("options") or {})
        out.pop("sweep")
        if self.sweep is not None:
            out["sweep"] = self.sweep.to_dict()
        return _lists(out)

    def without_sweep(self, overrides: dict | None = None) -> "ExperimentConfig":
        """The experiment one search of a sweep runs: no `sweep` section, `overrides` ({dotted field:
        value}) applied and validated."""
        data = self.to_dict()
        data.pop("sweep", None)
        return from_dict(apply_fields(data, overrides or {}))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def retrain_epochs(self) -> int:
        return self.retrain.epochs or self.search.epochs

    @property
    def retrain_batch_size(self) -> int:
        return self.retrain.batch_size or self.search.batch_size


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def from_dict(data) -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    sweep = data.pop("sweep", None)
    data_section = build_named(DataConfig, "dataset", DATASET_OPTIONS, data.pop("data", None), "data")
    space = build_named(SpaceConfig, "name", SPACE_OPTIONS, data.pop("space", None), "space")
    search = build_named(SearchConfig, "algorithm", SEARCH_OPTIONS, data.pop("search", None), "search")
    if hasattr(search.options, "check_space"):  # what an algorithm needs of the space (at load, not trial start)
        search.options.check_space(space)
    config = dataclasses.replace(build(ExperimentConfig, data), data=data_section, space=space, search=search)
    _check_workers(config)
    _check_tracking_uri(config.tracking.uri)
    if sweep is not None:
        config = dataclasses.replace(config, sweep=_build_sweep(sweep, config))
    return config


def apply_fields(data: dict, values: dict) -> dict:
    """A copy of the experiment dict `data` with {dotted field: value} set (e.g. {"search.tau": 5.0})."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, value in values.items():
        section, key = name.split(".", 1)
        out.setdefault(section, {})[key] = _lists(value)
    return out


def _sweepable(config: ExperimentConfig) -> list[str]:
    """The dotted fields a sweep of `config` may set: its search, space and training fields."""
    names = [f"search.{f.name}" for f in dataclasses.fields(SearchConfig) if f.name != "options"]
    names += [f"search.{f.name}" for f in dataclasses.fields(type(config.search.options))]
    names += [f"space.{f.name}" for f in dataclasses.fields(type(config.space.options))]
    names += [f"training.{f.name}" for f in dataclasses.fields(TrainingConfig)]
    return [n for n in names if n not in UNSWEPT]


def _sweep_param(name: str, dist, accepted: list[str], algorithm: str) -> SweepParam:
    path = f"sweep.params.{name}"
    if name in UNSWEPT:
        raise ConfigError(f"{path}: cannot be swept: {UNSWEPT[name]}")
    if name not in accepted:
        raise ConfigError(f"{path}: unknown field for {algorithm}; accepted: {', '.join(accepted)}")
    if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in SWEEP_KINDS):
        raise ConfigError(f"{path}: expected one of {{choice: [values]}}, {{uniform: [low, high]}}, "
                          f"{{loguniform: [low, high]}}, {{randint: [low, high]}}; got {dist!r}")
    kind, values = next(iter(dist.items()))
    if kind == "choice":
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{path}: choice takes a non-empty list of values, got {values!r}")
        return SweepParam(name, kind, tuple(_tuples(v) for v in values))
    number = int if kind == "randint" else (int, float)
    if (not isinstance(values, (list, tuple)) or len(values) != 2
            or any(isinstance(v, bool) or not isinstance(v, number) for v in values)):
        what = "integers" if kind == "randint" else "numbers"
        raise ConfigError(f"{path}: {kind} takes [low, high], two {what}; got {values!r}")
    low, high = values
    if (low > high) if kind == "randint" else (low >= high):
        raise ConfigError(f"{path}: {kind} needs low {'<=' if kind == 'randint' else '<'} high, got {list(values)}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{path}: loguniform needs low > 0, got {list(values)}")
    return SweepParam(name, kind, (low, high) if kind == "randint" else (float(low), float(high)))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


_MAX_COMBINATIONS = 256  # beyond this many, bounds are checked one field at a time only


def _build_sweep(data, config: ExperimentConfig) -> SweepConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"sweep: expected a mapping with params, algorithm, num_samples, ...; got {data!r}")
    if config.search.algorithm not in ALGORITHMS:
        raise ConfigError(f"search.algorithm: {config.search.algorithm} is a black-box baseline (a Tune sweep "
                          "itself); `sweep:` tunes a differentiable search's meta-hyper-parameters: use one of "
                          f"{', '.join(sorted(ALGORITHMS))}, or drop the sweep section")
    data = dict(data)
    params = data.pop("params", None)
    sweep = build(SweepConfig, data, "sweep")
    if not isinstance(params, dict) or not params:
        raise ConfigError("sweep.params: expected a mapping of at least one dotted field to its distribution, "
                          f"e.g. search.tau: {{choice: [1.0, 10.0]}}; got {params!r}")
    accepted = _sweepable(config)
    parsed = tuple(_sweep_param(str(name), dist, accepted, config.search.algorithm) for name, dist in params.items())
    _check_values(parsed, config)
    return dataclasses.replace(sweep, params=parsed)


def _check_values(params: tuple[SweepParam, ...], config: ExperimentConfig) -> None:
    """Every value a distribution can produce builds a valid experiment: each field's choices or both
    bounds (field checks are bounds), with the other fields as configured, then (when few) every
    combination of them (checks across fields)."""
    base = config.to_dict()
    for p in params:
        for value in p.values:
            try:
                from_dict(apply_fields(base, {p.field: value}))
            except ConfigError as err:
                reason = str(err).removeprefix(f"{p.field}: ")
                raise ConfigError(f"sweep.params.{p.field}: {p.kind} {list(_lists(p.values))} can produce "
                                  f"{_lists(value)!r}, which is not accepted: {reason}") from None
    combinations = 1
    for p in params:
        combinations *= len(p.values)
    if len(params) < 2 or combinations > _MAX_COMBINATIONS:
        return
    for values in itertools.product(*(p.values for p in params)):
        chosen = {p.field: v for p, v in zip(params, values)}
        try:
            from_dict(apply_fields(base, chosen))
        except ConfigError as err:
            raise ConfigError(f"sweep.params: the combination {_lists(chosen)} is not accepted: {err}") from None


def check_command(config: ExperimentConfig, command: str) -> None:
    """`raysearch sweep` needs a config with a `sweep:` section, `raysearch run` refuses one (a sweep run as
    one search would surprise); both say what to do instead."""
    if command == "sweep" and config.sweep is None:
        raise ConfigError("sweep: this config has no `sweep:` section naming the meta-hyper-parameters to sweep "
                          "(see configs/sweep_autohas_digits.yaml); `raysearch run CONFIG` runs its search once")
    if command == "run" and config.sweep is not None:
        raise ConfigError("sweep: this config sweeps its search's meta-hyper-parameters: run it with "
                          "`raysearch sweep CONFIG`, or run its search once with `--set sweep=null`")


def _check_tracking_uri(uri: str | None) -> None:
    """A password in a config would be copied to config.yaml, MLflow's params and Tune's state."""
    if uri and urllib.parse.urlsplit(uri).password is not None:
        raise ConfigError("tracking.uri: holds a password, which a config would copy into the run directory, "
                          "MLflow and Ray's state; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                          "MLFLOW_TRACKING_TOKEN) instead, or give the URI with --tracking-uri, which raysearch "
                          "redacts")


def _check_workers(config: ExperimentConfig) -> None:
    workers = config.ray.workers
    if workers == 1:
        return
    if config.search.algorithm not in ALGORITHMS:
        raise ConfigError(f"ray.workers: {workers} shards a differentiable search; a baseline "
                          f"({config.search.algorithm}) trains one configuration per trial: set 1")
    if config.search.batch_size % workers:
        raise ConfigError(f"search.batch_size: {config.search.batch_size} does not split evenly over "
                          f"ray.workers = {workers} (every worker takes an equal shard of each batch)")


def apply_override(data: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. search.epochs=5")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: --set value {raw!r} is not YAML ({str(err).splitlines()[0]}); quote the "
                          "whole assignment in the shell, e.g. --set 'space.ops=[skip_connect, nor_conv_3x3]'") from None


def read_yaml(path, what: str = "config") -> dict:
    """The mapping a YAML file holds, or a ConfigError starting with `what`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{what}: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} must hold a mapping at the top level")
    return data


def load_config(path, overrides=()) -> ExperimentConfig:
    """Load a YAML experiment, apply `KEY=VALUE` overrides (values parsed as YAML), validate."""
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(data)
