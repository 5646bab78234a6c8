"""Builders of each baseline's Tune search algorithm and scheduler, and the joint space's Tune forms.

Every trial reports `val_acc` once per epoch (see trainables/train.py); all
baselines maximise it, use `epoch` as the time attribute, and stop when the
trial-epoch budget is spent (`EpochBudget`) or the wall-clock cap is reached.
The generic parts (`to_tune`, `to_configspace`, `sampler`, `asha_scheduler`,
`bohb_parts`, `trial_slots`) also build the sweep over a differentiable
search's meta-hyper-parameters (`raysearch.meta_sweep`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import ConfigSpace
import optuna
import ray
import torch
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.bohb import TuneBOHB
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from raysearch.baselines.pyramid import RankNosh
from raysearch.baselines.rank_nosh import RankNoshScheduler, RankNoshSearcher
from raysearch.baselines.rea import RegularizedEvolution
from raysearch.data import load_splits
from raysearch.joint import Categorical, IntUniform, JointSpace, LogUniform, Uniform
from raysearch.predictors import PairwiseRanker
from raysearch.proxies import PROXIES
from raysearch.spaces import build_space

METRIC, MODE, TIME_ATTR = "val_acc", "max", "epoch"


@dataclass
class TuneParts:
    """What `raysearch.phases.fit` hands to Tune for one sweep (a baseline, or a meta-sweep)."""

    search_alg: object  # a Tune SearchAlgorithm or Searcher
    scheduler: object  # a Tune TrialScheduler
    param_space: dict  # searched dimensions as Tune domains (random sampling) or {} (the searcher owns them)
    num_samples: int = -1  # trials to create; -1 = until the searcher finishes or the budget stops the sweep
    max_concurrent: int | None = None  # Tune's max_concurrent_trials for a Searcher (None: resources decide)
    metric: str = METRIC  # the reported metric searcher and scheduler optimise
    mode: str = MODE  # "max" or "min"
    stop: object = None  # a Stopper for the whole sweep that is also a Callback (EpochBudget), or None
    time_budget_s: float | None = None  # wall-clock cap of the sweep
    reuse_actors: bool = True  # one trial process for many short trials (RAY_NOTES: ~1.5 s saved per trial)


class EpochBudget(Stopper, Callback):
    """Stops the whole sweep once the trials have reported `total` epochs between them.

    Also a Callback, listed in the run's callbacks, so Tune saves its count with
    the experiment and `raysearch resume` continues it instead of starting a
    fresh budget (the stopper and the callback are one object in Tune's pickle).
    """

    def __init__(self, total: int):
        self.total = total
        self.seen: set[tuple[str, int]] = set()  # (trial_id, epoch) of every reported epoch

    @property
    def used(self) -> int:
        return len(self.seen)

    def __call__(self, trial_id: str, result: dict) -> bool:
        # Distinct (trial, epoch) pairs: Tune repeats a trial's last result when its function returns.
        self.seen.add((trial_id, int(result.get("epoch", 0))))
        return False

    def stop_all(self) -> bool:
        return self.used >= self.total

    def get_state(self) -> dict:
        return {"seen": sorted(self.seen)}

    def set_state(self, state: dict) -> None:
        self.seen = set(map(tuple, state["seen"]))


def to_tune(space) -> dict:
    """Tune domains of a JointSpace, or of a sequence of dimensions (raysearch.joint's types)."""
    return {dim.name: _tune_domain(dim) for dim in getattr(space, "dims", space)}


def _tune_domain(dim):
    if isinstance(dim, Categorical):
        return tune.choice(list(dim.choices))
    if isinstance(dim, LogUniform):
        return tune.loguniform(dim.low, dim.high)
    if isinstance(dim, Uniform):
        return tune.uniform(dim.low, dim.high)
    return tune.randint(dim.low, dim.high + 1)  # IntUniform: Tune's upper bound is exclusive


def to_configspace(space, seed: int) -> ConfigSpace.ConfigurationSpace:
    """The ConfigSpace form (BOHB's) of a JointSpace or of a sequence of dimensions."""
    out = ConfigSpace.ConfigurationSpace(seed=seed)
    for dim in getattr(space, "dims", space):
        if isinstance(dim, Categorical):
            out.add(ConfigSpace.CategoricalHyperparameter(dim.name, list(dim.choices)))
        elif isinstance(dim, IntUniform):
            out.add(ConfigSpace.UniformIntegerHyperparameter(dim.name, dim.low, dim.high))
        else:
            out.add(ConfigSpace.UniformFloatHyperparameter(dim.name, dim.low, dim.high,
                                                           log=isinstance(dim, LogUniform)))
    return out


def trial_slots(cpus: float, gpus: float) -> int:
    """How many trials needing `cpus` and `gpus` each the Ray cluster can run at once (at least 1)."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1.0) // cpus
    if gpus:
        slots = min(slots, resources.get("GPU", 0.0) // gpus)
    return max(1, int(slots))


def _slots(config) -> int:
    return trial_slots(config.ray.cpus_per_trial, config.ray.gpus_per_trial)


def sampler(seed: int, max_concurrent: int) -> BasicVariantGenerator:
    """Tune's seeded random sampling, creating no more trials than can run: by default Tune creates up to
    200 ahead, and when the budget ends the unstarted ones would be left behind as empty trials."""
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def asha_scheduler(max_t: int, grace_period: int, reduction_factor: float) -> ASHAScheduler:
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t, grace_period=min(grace_period, max_t),
                         reduction_factor=reduction_factor)


def bohb_parts(dims, seed: int, max_t: int, reduction_factor: float, max_concurrent: int | None,
               metric: str = METRIC, mode: str = MODE) -> tuple:
    """(searcher, scheduler) of BOHB over `dims`: TuneBOHB and HyperBandForBOHB, epochs the fidelity."""
    searcher = TuneBOHB(space=to_configspace(dims, seed), metric=metric, mode=mode, seed=seed)
    if max_concurrent:  # HyperBandForBOHB tells the limiter about pauses, so paused trials do not count
        searcher = ConcurrencyLimiter(searcher, max_concurrent)
    return searcher, HyperBandForBOHB(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=reduction_factor)


def random_search(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    return TuneParts(sampler(config.seed, options.max_concurrent or _slots(config)), FIFOScheduler(),
                     to_tune(joint), num_samples=options.budget_epochs // config.search.epochs)


def asha(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    scheduler = asha_scheduler(config.search.epochs, options.grace_period, options.reduction_factor)
    return TuneParts(sampler(config.seed, options.max_concurrent or _slots(config)), scheduler, to_tune(joint))


def bohb(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    searcher, scheduler = bohb_parts(joint.dims, config.seed, config.search.epochs, options.reduction_factor,
                                     options.max_concurrent)
    return TuneParts(searcher, scheduler, {})


def tpe(config, joint: JointSpace) -> TuneParts:
    """Optuna's TPE through Ray's OptunaSearch, every trial trained fully, as most HPO users would run it."""
    options = config.search.options
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study and trial on the console
    sampler = optuna.samplers.TPESampler(n_startup_trials=options.startup_trials,
                                         multivariate=options.multivariate, seed=config.seed)
    # Optuna's own distributions: given Tune domains, OptunaSearch converts them too, but warns on the console.
    space = OptunaSearch.convert_search_space(to_tune(joint))
    searcher = OptunaSearch(space, metric=METRIC, mode=MODE, sampler=sampler)
    return TuneParts(searcher, FIFOScheduler(), {}, num_samples=options.budget_epochs // config.search.epochs,
                     max_concurrent=options.max_concurrent)


def regularized_evolution(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    searcher = RegularizedEvolution(joint, options.population, options.sample_size, config.seed, METRIC, MODE)
    return TuneParts(searcher, FIFOScheduler(), {}, max_concurrent=options.max_concurrent)


def proxy_level(config, joint: JointSpace) -> list[tuple[dict, float]]:
    """`proxy_samples` random configurations scored by the zero-cost proxy on one search-train minibatch."""
    options = config.search.options
    splits = load_splits(config.data)
    space = build_space(config.space, splits.shape)
    generator = torch.Generator().manual_seed(config.seed)
    batch = torch.randperm(len(splits.train[0]), generator=generator)[: config.search.batch_size]
    x, y = splits.train[0][batch], splits.train[1][batch]
    rng = random.Random(f"proxy-{config.seed}")  # apart from the pyramid's own stream
    scored = []
    for _ in range(options.proxy_samples):
        # A proxy scores the architecture only: mid-range HPs keep the ranker from reading their random values.
        candidate = {**joint.sample(rng), **{dim.name: math.sqrt(dim.low * dim.high) for dim in joint.hparams}}
        torch.manual_seed(config.seed)  # the same initial weights a trial of this configuration starts from
        network = space.network(joint.decode(candidate)[0])
        scored.append((candidate, PROXIES[options.proxy](network, x, y)))
    return scored


def rank_nosh(config, joint: JointSpace) -> TuneParts:
    options, epochs = config.search.options, config.search.epochs
    ranker = PairwiseRanker(joint.num_features, options.ranker_hidden, options.ranker_epochs, options.ranker_lr,
                            options.ranking_loss, config.seed)
    scored = proxy_level(config, joint) if options.proxy and options.proxy_samples else []
    nosh = RankNosh(joint, options.levels(epochs), options.promote_fraction, options.proposals, options.candidates,
                    options.budget_epochs, ranker, config.seed, scored, options.proxy_weight)
    # The searcher caps concurrency itself: Tune's limiter would count paused trials as running.
    return TuneParts(RankNoshSearcher(nosh, options.max_concurrent, METRIC, MODE), RankNoshScheduler(epochs, METRIC), {})
