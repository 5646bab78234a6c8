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
    """The trainable's own numeric metrics, flags as 0/1 (a search's `search_done`); Tune's bookkeeping
    keys dropped."""
    skip = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}
    return {k: float(v) for k, v in result.items() if k not in skip and isinstance(v, numbers.Number)}


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


SHARD_GROUPS = "raysearch-shard-groups"  # the named actor that knows every sharded trial's worker groups
_RELEASE_TIMEOUT_S = 30.0


def _remove_group(hex_id: str) -> None:
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
    if ray.util.placement_group_table(group).get("state") not in (None, "REMOVED"):
        remove_placement_group(group)


class _ShardGroups:
    """trial id -> the placement groups its Train worker groups were created in, since they started."""

    def __init__(self):
        self.groups: dict[str, set[str]] = {}

    def add(self, trial_id: str, group: str) -> None:
        self.groups.setdefault(trial_id, set()).add(group)

    def release(self, trial_id: str | None, keep: str | None = None) -> int:
        """Remove the trial's groups (every trial's with None) except `keep`; how many were removed."""
        removed = 0
        for trial in [trial_id] if trial_id is not None else list(self.groups):
            for group in self.groups.pop(trial, set()) - {keep}:
                _remove_group(group)
                removed += 1
            if keep is not None:
                self.groups[trial] = {keep}
        return removed


def shard_groups():
    """The `_ShardGroups` actor of this driver, created by `ReleaseShards.setup` (so that the driver owns
    it and it lives while the driver holds its handle, whatever trial dies)."""
    import ray

    # On the head node: a registry on a worker node would die with that node, as the trials it serves (the
    # driver's own node is not enough: on a one-machine test cluster it may be a worker node's raylet).
    return ray.remote(num_cpus=0)(_ShardGroups).options(
        name=SHARD_GROUPS, get_if_exists=True, resources={"node:__internal_head__": 0.001}).remote()


def register_shard_group(trial_id: str, group: str) -> None:
    """Called by a sharded trial's rank 0 as soon as its worker group exists, before any epoch: a trial
    that dies with its node before its first report must not leave its group behind either. Without
    ReleaseShards in the experiment (a user's own Tuner) there is no registry, and nothing to do."""
    import ray

    try:
        registry = ray.get_actor(SHARD_GROUPS)
    except ValueError:
        return
    ray.get(registry.add.remote(trial_id, group), timeout=_RELEASE_TIMEOUT_S)


class ReleaseShards(Callback):
    """Removes the placement group of a sharded search's Train workers once its trial is not running.

    Ray Train V2 creates that group from its controller, an actor of the
    trial. Ray removes a group only when its creator's job ends, so when
    Tune stops or pauses the trial (a scheduler's decision, the budget) or
    the trial dies with a node, the group stays reserved (ray-project/ray
    #54305; Train's own cleaner needs the dashboard's state API, which local
    runs do not start) and later trials wait for its CPUs forever. Rank 0
    registers the group with `shard_groups()`; the driver removes a trial's
    groups when it stops running, fails (before a retry too) or ends, and
    the earlier ones when a result comes from a new group.
    """

    def __init__(self):
        self.running: set[str] = set()  # trials RUNNING at the last step
        self.current: dict[str, str] = {}  # trial_id -> the group its last result came from

    def setup(self, **info):
        # The driver creates (or, after `raysearch resume`, recreates) the registry and holds its handle:
        # Ray ends an actor, named or not, once no handle to it is left.
        self.registry = shard_groups()

    def __getstate__(self):  # Tune pickles its callbacks with the experiment; a handle does not outlive a job
        return {k: v for k, v in self.__dict__.items() if k != "registry"}

    def _release(self, trial_id: str | None, keep: str | None = None) -> None:
        import ray

        if getattr(self, "registry", None) is None:
            self.setup()
        try:
            ray.get(self.registry.release.remote(trial_id, keep), timeout=_RELEASE_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as err:
            print(f"raysearch: warning: could not release the worker groups of {trial_id or 'every trial'} "
                  f"({type(err).__name__}); a later trial may wait for their resources", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        group = result.get(SHARDS_PLACEMENT_GROUP)
        if group and self.current.get(trial.trial_id) != group:  # a new attempt: its earlier workers are gone
            self._release(trial.trial_id, keep=group)
            self.current[trial.trial_id] = group

    def on_step_begin(self, iteration, trials, **info):
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        for trial_id in self.running - running:  # paused or stopped since the last step
            self._release(trial_id)
            self.current.pop(trial_id, None)
        self.running = running

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial.trial_id)
        self.current.pop(trial.trial_id, None)

    on_trial_error = on_trial_recover = on_trial_complete

    def on_experiment_end(self, trials, **info):
        self._release(None)
        self.current.clear()


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
