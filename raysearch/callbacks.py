"""Driver-side Tune callbacks: MLflow child runs per trial, one progress line per report, and a
meta-sweep's trial events."""

from __future__ import annotations

import numbers
import sys
from pathlib import Path

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
        self.logged: dict[str, int] = {}  # trial_id -> last step logged

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.run_ids:
            return
        tags = {"raysearch.role": self.role, "raysearch.trial_id": trial.trial_id}
        found = self.tracker.find_child(tags)
        if found:  # a resumed driver: the trial may repeat epochs its last Tune snapshot missed; log them once
            self.logged[trial.trial_id] = self.tracker.last_step(found, "epoch")
        self.run_ids[trial.trial_id] = found or self.tracker.start_child(
            f"{self.role}-{trial.trial_id}", flatten(trial.config), tags)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("training_iteration", 0))
        if step <= self.logged.get(trial.trial_id, 0):
            return
        self.logged[trial.trial_id] = step
        self.tracker.log_metrics(self.run_ids.get(trial.trial_id), numeric_metrics(result), step=step)

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


SHARDS_PLACEMENT_GROUP = "shards_placement_group"  # result key: the placement group of a trial's Train workers


class ReleaseShards(Callback):
    """Removes the placement group of a sharded search's Train workers once its trial is not running.

    Ray Train V2 creates that group from its controller, an actor of the
    trial; when Tune stops or pauses the trial (a scheduler's decision, the
    budget), the controller dies with the trial but the group stays reserved
    (ray-project/ray #54305; Train's own cleaner needs the dashboard's state
    API, which local runs do not start) and later trials wait for its CPUs
    forever. Every result of a sharded trial names its group; the driver
    removes it when the trial stops, pauses or fails, or reports from a new one.
    """

    def __init__(self):
        self.groups: dict[str, str] = {}  # trial_id -> hex id of the group its workers run in

    def on_trial_result(self, iteration, trials, trial, result, **info):
        group = result.get(SHARDS_PLACEMENT_GROUP)
        if group and self.groups.get(trial.trial_id) not in (None, group):
            _remove_group(self.groups[trial.trial_id])  # the workers of an earlier attempt
        if group:
            self.groups[trial.trial_id] = group

    def on_step_begin(self, iteration, trials, **info):
        for trial in trials:
            if trial.status != "RUNNING" and trial.trial_id in self.groups:
                _remove_group(self.groups.pop(trial.trial_id))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.groups:
            _remove_group(self.groups.pop(trial.trial_id))

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials, **info):
        for group in self.groups.values():
            _remove_group(group)
        self.groups.clear()


def _remove_group(hex_id: str) -> None:
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
    if ray.util.placement_group_table(group).get("state") not in (None, "REMOVED"):
        remove_placement_group(group)


def _value_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SweepProgressCallback(ProgressCallback):
    """A meta-sweep's console: `[search 00004 2/10] ...` per trial-epoch, plus one line per trial event
    (started with its sampled values, resumed, stopped by the scheduler, finished, restarted, failed)."""

    def __init__(self, role: str, total: int, keys: tuple[str, ...], label_key: str | None, metric: str,
                 scheduler: str):
        super().__init__(role, total, keys, label_key, per_trial=True)
        self.metric, self.scheduler = metric, scheduler
        self.started: set[str] = set()

    def _say(self, trial, text: str, error: bool = False) -> None:
        print(f"[{self.role} {trial.trial_id.rsplit('_', 1)[-1]}] {text}", file=sys.stderr if error else sys.stdout,
              flush=True)

    def _at(self, trial) -> str:
        result = trial.last_result or {}
        text = f"after epoch {result.get('epoch', 0)}"
        if self.metric in result:
            text += f": {self.metric} {result[self.metric]:.4g}"
        return text

    def on_trial_start(self, iteration, trials, trial, **info):
        epoch = (trial.last_result or {}).get("epoch")
        if trial.trial_id in self.started or epoch:
            self._say(trial, f"resumed from epoch {epoch or 0}")
        else:
            self._say(trial, "started  " + "  ".join(f"{k} {_value_text(v)}" for k, v in trial.config.items()))
        self.started.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        done = result.get("search_done")
        self._say(trial, f"{'finished' if done else f'stopped by {self.scheduler}'} {self._at(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, f"failed {self._at(trial)}; restarting from its last checkpoint", error=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(trial, f"failed {self._at(trial)}: {_reason(trial)}", error=True)


def _reason(trial) -> str:
    """The last line of a failed trial's error file (the exception), and where the whole traceback is
    kept (the run's Tune storage; Ray's session directory, where Tune first writes it, is temporary)."""
    try:
        kept = Path(trial.storage.trial_fs_path, trial.run_metadata.error_filename).as_posix()
    except (AttributeError, TypeError, ValueError):
        kept = trial.error_file
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines()
        return f"{lines[-1][:300]} (traceback: {kept})"
    except (OSError, TypeError, IndexError):
        return f"see {kept}"
