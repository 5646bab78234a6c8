"""Regularized evolution (Real et al. 2019) as a Ray Tune `Searcher`.

The first `population` configurations are random; after that each new one is
a parent picked by tournament (the best of `sample_size` random members of
the population) with one dimension mutated. The population keeps the
`population` most recently finished configurations: the oldest dies, not the
worst, which is what "regularized" means. Failed trials never join it.
"""

from __future__ import annotations

import collections
import random

from ray.tune.search import Searcher

from raysearch.baselines.state import load_state, save_state
from raysearch.joint import JointSpace


class RegularizedEvolution(Searcher):
    def __init__(self, joint: JointSpace, population: int, sample_size: int, seed: int,
                 metric: str = "val_acc", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.joint, self.population_size, self.sample_size = joint, population, sample_size
        self.rng = random.Random(seed)
        self.population: collections.deque = collections.deque(maxlen=population)  # (config, score), oldest first
        self.suggested = 0
        self.live: dict[str, dict] = {}  # trial_id -> config of trials not finished yet

    def suggest(self, trial_id: str) -> dict | None:
        if self.suggested < self.population_size:
            config = self.joint.sample(self.rng)
        elif not self.population:
            return None  # every initial trial is still running (or failed): wait for a result
        else:
            contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
            parent = max(contenders, key=lambda member: member[1])[0]
            config = self.joint.mutate(parent, self.rng)
        self.suggested += 1
        self.live[trial_id] = config
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self.live.pop(trial_id, None)
        if config is None or error or not result or self.metric not in result:
            return
        score = result[self.metric] if self.mode == "max" else -result[self.metric]
        self.population.append((config, float(score)))

    def save(self, checkpoint_path: str) -> None:
        save_state(checkpoint_path, {"rng": self.rng.getstate(), "population": list(self.population),
                                     "suggested": self.suggested, "live": self.live})

    def restore(self, checkpoint_path: str) -> None:
        state = load_state(checkpoint_path)
        self.rng.setstate(state["rng"])
        self.population = collections.deque((tuple(m) for m in state["population"]), maxlen=self.population_size)
        self.suggested, self.live = state["suggested"], dict(state["live"])
