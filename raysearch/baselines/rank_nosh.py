"""RANK-NOSH on Ray Tune: a searcher that starts proposed configurations and a scheduler that pauses
each trial at its pyramid level and resumes it, from its checkpoint, when it is promoted.

The pyramid (`raysearch.baselines.pyramid.RankNosh`) lives in the searcher,
because Tune saves and restores searchers with the experiment; the scheduler
reaches it through the controller, as Ray's HyperBandForBOHB reaches TuneBOHB.
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raysearch.baselines.pyramid import RankNosh
from raysearch.baselines.state import load_state, save_state
from raysearch.training import DIVERGED


class RankNoshSearcher(Searcher):
    """Starts the configurations the pyramid proposes, at most `max_concurrent` running at once.

    Tune starts every trial a searcher creates, so the cap lives here: `active`
    holds the trials that are pending or running (paused ones hold no
    resources), kept up to date by the scheduler, as HyperBandForBOHB tells
    Tune's ConcurrencyLimiter about pauses.
    """

    def __init__(self, nosh: RankNosh, max_concurrent: int | None = None, metric: str = "val_acc",
                 mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.nosh, self.max_concurrent = nosh, max_concurrent
        self.members: dict[str, int] = {}  # trial_id -> member index in the pyramid
        self.active: set[str] = set()  # trials pending or running

    def has_room(self) -> bool:
        return not self.max_concurrent or len(self.active) < self.max_concurrent

    def suggest(self, trial_id: str) -> dict | None:
        if not self.has_room():
            return None
        taken = self.nosh.take()
        if taken is None:
            return Searcher.FINISHED if self.nosh.finished else None  # None: wait for the round
        self.members[trial_id] = taken[0]
        self.active.add(trial_id)
        return taken[1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Epoch results reach the pyramid through the scheduler; final failures through here, since
        Tune also tells schedulers `on_trial_error` about failures it is about to recover from."""
        self.active.discard(trial_id)
        if trial_id in self.members and (error or (result or {}).get(DIVERGED)):
            # a diverged trial's last result (which schedulers never see) counts its epoch as spent
            self.nosh.fail(self.members[trial_id], int((result or {}).get("epoch", 0)))

    def save(self, checkpoint_path: str) -> None:
        save_state(checkpoint_path, {"nosh": self.nosh.state_dict(), "members": self.members})

    def restore(self, checkpoint_path: str) -> None:
        state = load_state(checkpoint_path)
        self.nosh.load_state_dict(state["nosh"])
        self.members = dict(state["members"])


class RankNoshScheduler(FIFOScheduler):
    """PAUSEs a trial when it reaches its target epochs; resumes promoted trials; ends the rest.

    `final_epoch` is the trainable's own last epoch: a trial promoted there ends by itself.
    """

    def __init__(self, final_epoch: int, metric: str = "val_acc"):
        super().__init__()
        self.final_epoch, self.report_metric = final_epoch, metric

    @staticmethod
    def _searcher(tune_controller) -> RankNoshSearcher:
        return tune_controller.search_alg.searcher

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        searcher = self._searcher(tune_controller)
        index = searcher.members[trial.trial_id]
        searcher.nosh.record(index, int(result["epoch"]), float(result[self.report_metric]))
        if searcher.nosh.runnable(index) or result["epoch"] >= self.final_epoch:
            return TrialScheduler.CONTINUE
        searcher.active.discard(trial.trial_id)
        return TrialScheduler.PAUSE

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        searcher, trials = self._searcher(tune_controller), tune_controller.get_trials()
        # Restored experiments bring paused trials back as PENDING: both statuses may wait for promotion.
        waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)]
        for trial in sorted(waiting, key=lambda t: t.status != Trial.PENDING):
            if not searcher.nosh.runnable(searcher.members[trial.trial_id]):
                continue
            if trial.trial_id not in searcher.active:  # a promoted trial resumes when there is room
                if not searcher.has_room():
                    continue
                searcher.active.add(trial.trial_id)
            return trial
        if searcher.nosh.finished:
            for trial in waiting:  # promoted no further: their training ends here
                tune_controller.stop_trial(trial)
        return None
