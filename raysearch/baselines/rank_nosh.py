"""RANK-NOSH on Ray Tune: a searcher that starts proposed configurations and a scheduler that pauses
each trial at its pyramid level and resumes it, from its checkpoint, when it is promoted.

The pyramid (`raysearch.baselines.pyramid.RankNosh`) lives in the searcher,
because Tune saves and restores searchers with the experiment; the scheduler
reaches it through the controller, as Ray's HyperBandForBOHB reaches TuneBOHB.
"""

from __future__ import annotations

import pickle

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raysearch.baselines.pyramid import RankNosh


class RankNoshSearcher(Searcher):
    def __init__(self, nosh: RankNosh, metric: str = "val_acc", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.nosh = nosh
        self.members: dict[str, int] = {}  # trial_id -> member index in the pyramid

    def suggest(self, trial_id: str) -> dict | None:
        taken = self.nosh.take()
        if taken is None:
            return Searcher.FINISHED if self.nosh.finished else None  # None: wait for the round
        self.members[trial_id] = taken[0]
        return taken[1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Results reach the pyramid through the scheduler, which sees every epoch."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.nosh, self.members), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.nosh, self.members = pickle.load(f)


class RankNoshScheduler(FIFOScheduler):
    """PAUSEs a trial when it reaches its target epochs; runs new and promoted trials; ends the rest.

    `final_epoch` is the trainable's own last epoch: a trial promoted there ends by itself.
    `max_concurrent` caps running trials (paused ones hold no resources and do not count).
    """

    def __init__(self, final_epoch: int, max_concurrent: int | None = None, metric: str = "val_acc"):
        super().__init__()
        self.final_epoch, self.max_concurrent, self.report_metric = final_epoch, max_concurrent, metric

    @staticmethod
    def _searcher(tune_controller) -> RankNoshSearcher:
        return tune_controller.search_alg.searcher

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        searcher = self._searcher(tune_controller)
        index = searcher.members[trial.trial_id]
        searcher.nosh.record(index, int(result["epoch"]), float(result[self.report_metric]))
        if searcher.nosh.runnable(index) or result["epoch"] >= self.final_epoch:
            return TrialScheduler.CONTINUE
        return TrialScheduler.PAUSE

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        searcher = self._searcher(tune_controller)
        if trial.trial_id in searcher.members:
            searcher.nosh.fail(searcher.members[trial.trial_id])

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        searcher, trials = self._searcher(tune_controller), tune_controller.get_trials()
        if self.max_concurrent and sum(t.status == Trial.RUNNING for t in trials) >= self.max_concurrent:
            return None
        # Restored experiments bring paused trials back as PENDING: both statuses may wait for promotion.
        waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)]
        for trial in sorted(waiting, key=lambda t: t.status != Trial.PENDING):
            if searcher.nosh.runnable(searcher.members[trial.trial_id]):
                return trial
        if searcher.nosh.finished:
            for trial in waiting:  # promoted no further: their training ends here
                tune_controller.stop_trial(trial)
        return None
