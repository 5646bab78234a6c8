"""`raysearch.run` and `raysearch.resume`: a search trial, then a retraining trial, on Ray Tune.

The CLI is a thin layer over this module, so notebooks and scripts get the same
run directory, MLflow runs and summary. Both entry points share `_execute`;
under `resume` each phase restores its stored Tune experiment, so unfinished
trials continue from their checkpoints and finished ones are not run again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from raysearch.callbacks import MlflowCallback, ProgressCallback, numeric_metrics
from raysearch.config import ExperimentConfig, load_config
from raysearch.data import check_available
from raysearch.results import Summary, plot_encodings, plot_lr, write_results, write_summary
from raysearch.tracking import Tracker, default_uri, flatten

SEARCH_KEYS = ("train_loss", "val_acc", "derived_val_acc", "lr_factor", "weight_decay", "arch_entropy")
TRAIN_KEYS = ("train_loss", "train_acc", "test_acc", "lr")
STATE_FILE = "run.json"


class RunFailed(RuntimeError):
    """A trial of the experiment failed; the message carries the trial's reason."""


class RunInterrupted(RuntimeError):
    """The run stopped before its trials finished (Ctrl-C, SIGTERM); `raysearch resume` continues it."""


class RunDirError(ValueError):
    """The run directory is in use (for `run`) or holds no run (for `resume`)."""


def _probe_ray(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a host:port address (`ray.init` would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} ({err})") from None


def start_ray(config: ExperimentConfig, address: str | None) -> bool:
    """Connect to `address`, or start a local Ray with this machine's CPUs; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or config.ray.address
    if address:
        _probe_ray(address)
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
        ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return True


def fit(trainable, param_space: dict, name: str, storage: str, config: ExperimentConfig, callbacks,
        restore: bool = False):
    """Run one trial of `trainable` under Tune; with `restore`, continue the one stored under `name`.

    Tune keeps results and checkpoints in `storage`/`name`; a restored experiment
    skips finished trials, continues unfinished ones from their last checkpoint
    and uses the callbacks pickled with it.
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # our ProgressCallback prints; Tune's tables would bury it
    # Keeping 2 checkpoints makes Tune snapshot its experiment state at least every 2 epochs, so a
    # killed driver loses at most one epoch on `resume`; frequent snapshots are intended here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    trainable = tune.with_resources(trainable, {"cpu": config.ray.cpus_per_trial, "gpu": config.ray.gpus_per_trial})
    path = f"{storage}/{name}"
    if restore and tune.Tuner.can_restore(path):
        try:
            return tune.Tuner.restore(path, trainable, resume_errored=True).fit()[0]
        except ValueError as err:  # stopped before Tune saved any experiment state
            print(f"raysearch: {name}: nothing to restore ({err}); starting this phase afresh", flush=True)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner.fit()[0]


def _row(config: ExperimentConfig, role: str, result, param_space: dict, genotype: str | None = None,
         val: float | None = None, test: float | None = None) -> dict:
    metrics = result.metrics or {}
    return {
        "experiment": config.name, "role": role, "trial_id": metrics.get("trial_id"),
        "status": "ERROR" if result.error else "TERMINATED",
        "error": None if result.error is None else str(result.error).strip().splitlines()[-1][:1000],
        "epochs": metrics.get("training_iteration"), "seconds": metrics.get("time_total_s"),
        "genotype": genotype, "val_accuracy": val, "test_accuracy": test,
        "metrics": json.dumps(numeric_metrics(metrics)), "config": json.dumps(param_space),
    }


def _write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content, indent=1))
    return path


def _tracker(config: ExperimentConfig, run_dir: Path, uri: str | None) -> Tracker:
    local = uri is None and config.tracking.uri is None
    return Tracker(uri or config.tracking.uri or default_uri(run_dir), config.tracking.experiment or config.name,
                   config.tracking.timeout_s, config.tracking.retries,
                   artifact_location=(run_dir / "mlartifacts").as_uri() if local else None)


@dataclass(frozen=True)
class RunState:
    """run.json: what `resume` needs beyond config.yaml."""

    run_id: str  # unique id, part of the Tune storage key (several runs may share ray.storage_path)
    tracking_uri: str | None  # a given tracking URI; null = the store inside the run directory
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None

    def storage(self, config: ExperimentConfig, run_dir: Path) -> str:
        if config.ray.storage_path:
            return f"{config.ray.storage_path.rstrip('/')}/{run_dir.name}-{self.run_id}"
        return str(run_dir / "ray")

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        try:
            return cls(**json.loads((run_dir / STATE_FILE).read_text()))
        except FileNotFoundError:
            raise RunDirError(f"{run_dir} holds no raysearch run (no {STATE_FILE}); start one with `raysearch run`")
        except (ValueError, TypeError) as err:
            raise RunDirError(f"{run_dir / STATE_FILE} is damaged ({err}); start a new run") from None


def run(config: ExperimentConfig, output_dir=None, tracking_uri: str | None = None,
        address: str | None = None) -> Summary:
    """Search, retrain and evaluate `config`; every result lands in the run directory and MLflow."""
    check_available(config.data.dataset, config.data.root)  # before any resource is taken
    run_dir = Path(output_dir or Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (run_dir / STATE_FILE).exists():
        raise RunDirError(f"{run_dir} already holds a run: continue it with `raysearch resume {run_dir}` "
                          "or choose another --output-dir")
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    tracker = _tracker(config, run_dir, tracking_uri).start(run_dir.name, flatten(config.to_dict()))
    tracker.log_artifacts(tracker.parent_run_id, [run_dir / "config.yaml"])
    state = RunState(uuid.uuid4().hex[:8], tracking_uri or config.tracking.uri, tracker.experiment_id,
                     tracker.parent_run_id)
    _write_json(run_dir / STATE_FILE, asdict(state))
    return _execute(config, run_dir, tracker, state, address, restore=False)


def resume(run_dir, address: str | None = None) -> Summary:
    """Continue an interrupted run: unfinished trials resume from their last checkpoints."""
    run_dir = Path(run_dir).resolve()
    state = RunState.load(run_dir)
    if (run_dir / "summary.json").exists():
        print(f"raysearch: {run_dir} is complete; nothing to resume", flush=True)
        return Summary(**json.loads((run_dir / "summary.json").read_text()))
    config = load_config(run_dir / "config.yaml")
    check_available(config.data.dataset, config.data.root)
    tracker = _tracker(config, run_dir, state.tracking_uri)
    tracker.reopen(state.mlflow_experiment_id, state.mlflow_parent_run_id)
    return _execute(config, run_dir, tracker, state, address, restore=True)


def _finished(result, role: str, epochs: int, rows: list, row: dict) -> None:
    """Raise unless the phase's trial ran all its epochs: a trial error, or an interruption."""
    if result.error is not None:
        rows.append(row)
        raise RunFailed(f"{role} trial failed: {row['error']}")
    if (result.metrics or {}).get("epoch", 0) < epochs:  # Tune returns normally on Ctrl-C
        raise RunInterrupted(f"the {role} trial stopped after epoch {(result.metrics or {}).get('epoch', 0)} "
                             f"of {epochs}")


def _search(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool):
    """Phase 1: the search trial; returns its Result and the derived configuration."""
    from trainables.common import read_json
    from trainables.search import DERIVED_FILE, search_trainable

    space = {"experiment": config.to_dict()}
    result = fit(search_trainable, space, "search", storage, config, [
        MlflowCallback(tracker, "search"), ProgressCallback("search", config.search.epochs, SEARCH_KEYS, "genotype"),
    ], restore)
    _finished(result, "search", config.search.epochs, rows, _row(config, "search", result, space))
    derived = read_json(result.checkpoint, DERIVED_FILE)
    rows.append(_row(config, "search", result, space, derived["genotype"], result.metrics["derived_val_acc"]))
    return result, derived


def _retrain(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool,
             genotype: str, hparams: dict):
    """Phase 2: retrain the derived configuration on search-train + search-val; returns its Result."""
    from ray import tune

    from trainables.train import train_trainable

    space = {"experiment": config.to_dict(), "genotype": genotype, "lr": "replayed per step",
             "weight_decay": hparams["weight_decay"], "epochs": config.retrain_epochs}
    # The per-step lr list goes through Ray's object store, not into every Tune result.
    trainable = tune.with_parameters(train_trainable, lr_schedule=hparams["lr"])
    result = fit(trainable, space, "retrain", storage, config, [
        MlflowCallback(tracker, "retrain"), ProgressCallback("retrain", config.retrain_epochs, TRAIN_KEYS),
    ], restore)
    _finished(result, "retraining", config.retrain_epochs, rows, _row(config, "retrain", result, space, genotype))
    rows.append(_row(config, "retrain", result, space, genotype, test=result.metrics["test_acc"]))
    return result


def _child(tracker: Tracker, role: str, result) -> str | None:
    return tracker.find_child({"raysearch.role": role, "raysearch.trial_id": result.metrics["trial_id"]})


def _execute(config: ExperimentConfig, run_dir: Path, tracker: Tracker, state: RunState, address: str | None,
             restore: bool) -> Summary:
    print(f"raysearch: run directory {run_dir}\nraysearch: MLflow {tracker.uri}"
          + ("" if tracker.enabled else " (unavailable: tracking off)"), flush=True)
    artifacts, storage = run_dir / "artifacts", state.storage(config, run_dir)
    rows, status, started = [], "FAILED", False
    try:
        started = start_ray(config, address)
        search, derived = _search(config, storage, tracker, rows, restore)
        genotype, hparams = derived["genotype"], derived["hparams"]
        shared = [  # logged with the search and with the retraining
            run_dir / "config.yaml",
            _write_json(artifacts / "genotype.json", {"space": config.space.name, "genotype": genotype}),
            _write_json(artifacts / "hparams.json", hparams),
        ]
        plots = [plot_encodings(derived["history"], derived["labels"], artifacts / "encodings.png")]
        if isinstance(hparams.get("lr"), list):
            plots.append(plot_lr(hparams["lr"], artifacts / "lr_schedule.png"))
        tracker.log_artifacts(_child(tracker, "search", search), shared + plots)

        retrain = None
        if config.retrain.enabled:
            retrain = _retrain(config, storage, tracker, rows, restore, genotype, hparams)
            tracker.log_artifacts(_child(tracker, "retrain", retrain), shared)

        summary = Summary(
            experiment=config.name, algorithm=config.search.algorithm, space=config.space.name,
            dataset=config.data.dataset, genotype=genotype, hparams=hparams,
            search_seconds=search.metrics["time_total_s"],
            retrain_seconds=retrain.metrics["time_total_s"] if retrain else None,
            val_accuracy=search.metrics["derived_val_acc"],
            test_accuracy=retrain.metrics["test_acc"] if retrain else None,
            mlflow_experiment_id=tracker.experiment_id, mlflow_parent_run_id=tracker.parent_run_id,
            run_dir=str(run_dir), extra={"tracking_uri": tracker.uri},
        )
        tracker.log_metrics(tracker.parent_run_id, {k: v for k, v in (
            ("val_accuracy", summary.val_accuracy), ("test_accuracy", summary.test_accuracy)) if v is not None}, 0)
        tracker.log_artifacts(tracker.parent_run_id, [write_summary(summary, run_dir)])
        status = "FINISHED"
        return summary
    except (RunInterrupted, KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if rows:
            tracker.log_artifacts(tracker.parent_run_id, [write_results(rows, run_dir)])
        tracker.end_open_children(status)
        tracker.end(tracker.parent_run_id, status)
        if started:
            import ray

            ray.shutdown()
