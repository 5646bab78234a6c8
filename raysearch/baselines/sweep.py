"""Builders of each baseline's Tune search algorithm and scheduler, and the joint space's Tune forms.

Every trial reports `val_acc` once per epoch (see trainables/train.py); all
baselines maximise it, use `epoch` as the time attribute, and stop when the
trial-epoch budget is spent (`EpochBudget`) or the wall-clock cap is reached.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import ConfigSpace
import ray
import torch
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.bohb import TuneBOHB
from ray.tune.stopper import Stopper

from raysearch.baselines.pyramid import RankNosh
from raysearch.baselines.rank_nosh import RankNoshScheduler, RankNoshSearcher
from raysearch.baselines.rea import RegularizedEvolution
from raysearch.data import load_splits
from raysearch.joint import Categorical, JointSpace
from raysearch.predictors import PairwiseRanker
from raysearch.proxies import PROXIES
from raysearch.spaces import build_space

METRIC, MODE, TIME_ATTR = "val_acc", "max", "epoch"


@dataclass
class TuneParts:
    """What `raysearch.phases.fit` hands to Tune for one baseline."""

    search_alg: object  # a Tune SearchAlgorithm or Searcher
    scheduler: object  # a Tune TrialScheduler
    param_space: dict  # searched dimensions as Tune domains (random sampling) or {} (the searcher owns them)
    num_samples: int = -1  # trials to create; -1 = until the searcher finishes or the budget stops the sweep
    max_concurrent: int | None = None  # Tune's max_concurrent_trials for a Searcher (None: resources decide)


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


def to_tune(joint: JointSpace) -> dict:
    return {dim.name: tune.choice(list(dim.choices)) if isinstance(dim, Categorical)
            else tune.loguniform(dim.low, dim.high) for dim in joint.dims}


def to_configspace(joint: JointSpace, seed: int) -> ConfigSpace.ConfigurationSpace:
    space = ConfigSpace.ConfigurationSpace(seed=seed)
    for dim in joint.dims:
        space.add(ConfigSpace.CategoricalHyperparameter(dim.name, list(dim.choices)) if isinstance(dim, Categorical)
                  else ConfigSpace.UniformFloatHyperparameter(dim.name, dim.low, dim.high, log=True))
    return space


def _slots(config) -> int:
    """How many trials the Ray cluster can run at once."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1.0) // config.ray.cpus_per_trial
    if config.ray.gpus_per_trial:
        slots = min(slots, resources.get("GPU", 0.0) // config.ray.gpus_per_trial)
    return max(1, int(slots))


def _sampler(config) -> BasicVariantGenerator:
    """Tune's seeded random sampling, creating no more trials than can run: by default Tune creates up to
    200 ahead, and when the budget ends the unstarted ones would be left behind as empty trials."""
    return BasicVariantGenerator(random_state=config.seed,
                                 max_concurrent=config.search.options.max_concurrent or _slots(config))


def random_search(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    return TuneParts(_sampler(config), FIFOScheduler(), to_tune(joint),
                     num_samples=options.budget_epochs // config.search.epochs)


def asha(config, joint: JointSpace) -> TuneParts:
    options, epochs = config.search.options, config.search.epochs
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=epochs, grace_period=min(options.grace_period, epochs),
                              reduction_factor=options.reduction_factor)
    return TuneParts(_sampler(config), scheduler, to_tune(joint))


def bohb(config, joint: JointSpace) -> TuneParts:
    options = config.search.options
    searcher = TuneBOHB(space=to_configspace(joint, config.seed), metric=METRIC, mode=MODE, seed=config.seed)
    if options.max_concurrent:  # HyperBandForBOHB tells the limiter about pauses, so paused trials do not count
        searcher = ConcurrencyLimiter(searcher, options.max_concurrent)
    scheduler = HyperBandForBOHB(time_attr=TIME_ATTR, max_t=config.search.epochs,
                                 reduction_factor=options.reduction_factor)
    return TuneParts(searcher, scheduler, {})


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
                    options.budget_epochs, ranker, config.seed, scored)
    # The searcher caps concurrency itself: Tune's limiter would count paused trials as running.
    return TuneParts(RankNoshSearcher(nosh, options.max_concurrent, METRIC, MODE), RankNoshScheduler(epochs, METRIC), {})
