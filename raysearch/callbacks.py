"""Driver-side Tune callbacks: MLflow child runs per trial, and one progress line per report."""

from __future__ import annotations

import numbers
import sys

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from raysearch.tracking import Tracker, flatten
from raysearch.training import DIVERGED


def numeric_metrics(result: dict) -> dict[str, float]:
    """The trainable's own numeric metrics (Tune's bookkeeping keys dropped)."""
    skip = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}
    return {k: float(v) for k, v in result.items()
            if k not in skip and isinstance(v, numbers.Number) and not isinstance(v, bool)}


class MlflowCallback(Callback):
    """One MLflow child run per trial under the experiment's parent run.

    Child runs are tagged with the trial id, so a trial restarted after a
    failure, or resumed by `raysearch resume` in a new driver (where Tune
    restores a pickled copy of this callback), keeps logging to its own run.
    """

    def __init__(self, tracker: Tracker, role: str):
        self.tracker, self.role = tracker, role
        self.run_ids: dict[str, str | None] = {}  # trial_id -> MLflow run id

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.run_ids:
            return
        tags = {"raysearch.role": self.role, "raysearch.trial_id": trial.trial_id}
        self.run_ids[trial.trial_id] = self.tracker.find_child(tags) or self.tracker.start_child(
            f"{self.role}-{trial.trial_id}", flatten(trial.config), tags)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_metrics(self.run_ids.get(trial.trial_id), numeric_metrics(result),
                                 step=int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        diverged = trial.last_result.get(DIVERGED)  # a sweep trial that ended because its loss diverged
        self.tracker.end(self.run_ids.get(trial.trial_id), "FAILED" if diverged else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.end(self.run_ids.get(trial.trial_id), "FAILED")


class ProgressCallback(Callback):
    """Prints one line per reported epoch: `[search 3/20] train_loss 0.52 ...`; with `per_trial`,
    `[search 00004 3/20] ...` (the trial's number) for sweeps of many trials."""

    def __init__(self, role: str, total: int, keys: tuple[str, ...], label_key: str | None = None,
                 per_trial: bool = False):
        self.role, self.total, self.keys, self.label_key, self.per_trial = role, total, keys, label_key, per_trial

    def on_trial_result(self, iteration, trials, trial, result, **info):
        who = f"{self.role} {trial.trial_id.rsplit('_', 1)[-1]}" if self.per_trial else self.role
        parts = [f"[{who} {result.get('epoch', '?')}/{self.total}]"]
        parts += [f"{k} {result[k]:.4g}" for k in self.keys if k in result]
        if self.label_key and self.label_key in result:
            parts.append(str(result[self.label_key]))
        print("  ".join(parts), file=sys.stdout, flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[{self.role}] trial {trial.trial_id} failed; see {trial.error_file}", file=sys.stderr, flush=True)
