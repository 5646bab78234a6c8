"""Black-box baselines: every trial trains one (architecture, hyper-parameters) configuration under Ray Tune.

The table maps a name to its options (a frozen dataclass, read from the keys
under `search:` beside `algorithm`, `epochs` and `batch_size`) and to the
builder of its Tune searcher and scheduler in `raysearch.baselines.sweep`.
Importing this module does not import Ray; building a baseline does.
`search.epochs` is each trial's full training length (the fidelity schedulers cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.predictors import LOSSES
from raysearch.proxies import PROXIES
from raysearch.registry import Registry
from raysearch.schema import ConfigError, spec


@dataclass(frozen=True)
class BaselineConfig:
    """Options every baseline has; `random` has only these."""

    budget_epochs: int = spec(100, ge=1)  # trial-epochs over all trials: the currency of equal-budget comparisons
    max_concurrent: int | None = spec(None, ge=1)  # trials running at once; null = as many as Ray's CPUs allow
    lr_range: tuple[float, ...] = spec((0.01, 0.5), gt=0.0, length=2)  # log-uniform range of the SGD learning rate
    weight_decay_range: tuple[float, ...] = spec((1e-5, 1e-2), gt=0.0, length=2)  # log-uniform weight decay range

    def check(self, search) -> None:
        """Cross-field checks against the common search fields (called when the config is loaded)."""
        if self.budget_epochs < search.epochs:
            raise ConfigError(f"search.budget_epochs: {self.budget_epochs} is less than one full trial "
                              f"(search.epochs = {search.epochs})")
        for name in ("lr_range", "weight_decay_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"search.{name}: expected [low, high], got {[low, high]}")


@dataclass(frozen=True)
class ASHAConfig(BaselineConfig):
    grace_period: int = spec(1, ge=1)  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = spec(3.0, gt=1.0)  # eta: each rung promotes the top 1/eta


@dataclass(frozen=True)
class BOHBConfig(BaselineConfig):
    reduction_factor: float = spec(3.0, gt=1.0)  # eta of HyperBand's brackets (epochs are the fidelity)


@dataclass(frozen=True)
class TPEConfig(BaselineConfig):
    startup_trials: int = spec(10, ge=1)  # random configurations before TPE models the results (Optuna's default)
    multivariate: bool = False  # one joint density over all dimensions, not one per dimension (Optuna's default: no)


@dataclass(frozen=True)
class REAConfig(BaselineConfig):
    population: int = spec(20, ge=2)  # configurations alive; the first `population` are random
    sample_size: int = spec(5, ge=1)  # tournament size when picking a parent to mutate


@dataclass(frozen=True)
class RankNoshConfig(BaselineConfig):
    """RANK-NOSH's constants; the authors did not publish theirs, these defaults are ours."""

    level_epochs: tuple[int, ...] | None = spec(None, ge=1)  # epochs of each pyramid level; null = E/9, E/3, E
    promote_fraction: float = spec(0.5, gt=0.0, le=1.0)  # r: level i+1 grows to this share of level i
    proposals: int = spec(8, ge=1)  # K: configurations the ranker proposes per round
    candidates: int = spec(500, ge=1)  # random configurations the ranker scores per round
    proxy: str | None = spec("snip", choices=PROXIES)  # zero-cost proxy of the bottom level; null = none
    proxy_samples: int = spec(100, ge=0)  # configurations scored by the proxy (no training)
    proxy_weight: float = spec(0.1, ge=0.0)  # proxy pairs' share of the ranker loss vs training pairs', x agreement
    ranker_hidden: int = spec(64, ge=1)  # width of the ranker's two hidden layers
    ranker_epochs: int = spec(200, ge=1)  # full-batch Adam steps per ranker fit
    ranker_lr: float = spec(0.01, gt=0.0)  # Adam learning rate of the ranker
    ranking_loss: str = spec("logistic", choices=LOSSES)  # pairwise loss: logistic, or hinge with margin 1

    def levels(self, epochs: int) -> tuple[int, ...]:
        """The level epochs, by default a factor of 3 apart up to the full trial `epochs`."""
        return self.level_epochs or tuple(sorted({max(1, round(epochs / 3**k)) for k in (2, 1, 0)}))

    def check(self, search) -> None:
        super().check(search)
        levels = self.levels(search.epochs)
        if list(levels) != sorted(set(levels)) or levels[-1] > search.epochs:
            raise ConfigError(f"search.level_epochs: expected increasing epochs up to search.epochs = "
                              f"{search.epochs}, got {list(levels)}")


@dataclass(frozen=True)
class BaselineEntry:
    config_type: type  # frozen dataclass of the baseline's options
    builder: str  # function in raysearch.baselines.sweep: (ExperimentConfig, JointSpace) -> TuneParts

    def build(self, config, joint):
        from raysearch.baselines import sweep  # imports Ray; only the driver of a sweep needs it

        return getattr(sweep, self.builder)(config, joint)


BASELINES = Registry("baseline", {
    "random": BaselineEntry(BaselineConfig, "random_search"),
    "asha": BaselineEntry(ASHAConfig, "asha"),
    "bohb": BaselineEntry(BOHBConfig, "bohb"),
    "tpe": BaselineEntry(TPEConfig, "tpe"),
    "rea": BaselineEntry(REAConfig, "regularized_evolution"),
    "rank_nosh": BaselineEntry(RankNoshConfig, "rank_nosh"),
})
