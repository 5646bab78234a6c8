"""`raysearch.run`, `raysearch.sweep` and `raysearch.resume`: a search trial (or a baseline's sweep),
or a sweep of searches over their meta-hyper-parameters, then a retraining trial, on Ray Tune.

The CLI is a thin layer over this module, so notebooks and scripts get the same
run directory, MLflow runs and summary. All entry points share `_execute`;
under `resume` each phase restores its stored Tune experiment, so unfinished
trials continue from their checkpoints and finished ones are not run again.
A config with a `sweep:` section is a sweep (`sweep` runs it, `run` refuses
it); config.yaml in the run directory keeps the section, so `resume` continues
a sweep as a sweep.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from raysearch import phases
from raysearch.algorithms import ALGORITHMS
from raysearch.config import ExperimentConfig, check_command, load_config
from raysearch.data import check_available
from raysearch.phases import RunFailed, RunInterrupted
from raysearch.model import MODEL_DIR
from raysearch.preflight import check_cluster, check_config
from raysearch.product import keep_model
from raysearch.ray_session import start_ray, stop_ray
from raysearch.results import Summary, write_results, write_summary
from raysearch.tracking import Tracker, adopt_credentials, default_uri, flatten
from raysearch.ui import share_view

__all__ = ["RunDirError", "RunFailed", "RunInterrupted", "resume", "run", "sweep"]

STATE_FILE = "run.json"
SUMMARY_METRICS = ("test_accuracy", "val_accuracy", "search_seconds")  # the parent run's, the UI's columns


class RunDirError(ValueError):
    """The run directory is in use (for `run`) or holds no run (for `resume`)."""


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
        address: str | None = None, callbacks=()) -> Summary:
    """Search, retrain and evaluate `config`; every result lands in the run directory and MLflow.

    `callbacks` are extra `ray.tune.Callback`s added to every phase's Tune experiment.
    A config with a `sweep:` section is refused: `sweep` runs it.
    """
    check_command(config, "run")
    return _start(config, output_dir, tracking_uri, address, callbacks)


def sweep(config: ExperimentConfig, output_dir=None, tracking_uri: str | None = None,
          address: str | None = None, callbacks=()) -> Summary:
    """Sweep `config`'s `sweep.params` over whole searches, then retrain and evaluate the best search's
    derived configuration; the same run directory, MLflow runs and summary as `run`."""
    check_command(config, "sweep")
    return _start(config, output_dir, tracking_uri, address, callbacks)


def _start(config: ExperimentConfig, output_dir, tracking_uri: str | None, address: str | None,
           callbacks) -> Summary:
    tracking_uri = adopt_credentials(tracking_uri)
    check_available(config.data.dataset, config.data.root)  # before any resource is taken
    check_config(config, address)  # batch vs splits, one step's memory (vs this machine, for a local run)
    run_dir = Path(output_dir or Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (run_dir / STATE_FILE).exists():
        raise RunDirError(f"{run_dir} already holds a run: continue it with `raysearch resume {run_dir}` "
                          "or choose another --output-dir")
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    tracker = _tracker(config, run_dir, tracking_uri).start(run_dir.name, flatten(config.to_dict()))
    share_view(tracker, list(SUMMARY_METRICS))
    tracker.log_artifacts(tracker.parent_run_id, [run_dir / "config.yaml"])
    state = RunState(uuid.uuid4().hex[:8], tracking_uri or config.tracking.uri, tracker.experiment_id,
                     tracker.parent_run_id)
    _write_json(run_dir / STATE_FILE, asdict(state))
    return _execute(config, run_dir, tracker, state, address, restore=False, callbacks=callbacks)


def resume(run_dir, address: str | None = None) -> Summary:
    """Continue an interrupted run: unfinished trials resume from their last checkpoints."""
    run_dir = Path(run_dir).resolve()
    state = RunState.load(run_dir)
    if (run_dir / "summary.json").exists():
        print(f"raysearch: {run_dir} is complete; nothing to resume", flush=True)
        return Summary(**json.loads((run_dir / "summary.json").read_text()))
    config = load_config(run_dir / "config.yaml")
    check_available(config.data.dataset, config.data.root)
    check_config(config, address)
    tracker = _tracker(config, run_dir, state.tracking_uri)
    tracker.reopen(state.mlflow_experiment_id, state.mlflow_parent_run_id)
    return _execute(config, run_dir, tracker, state, address, restore=True)


def _child(tracker: Tracker, role: str, trial_id: str) -> str | None:
    return tracker.find_child({"raysearch.role": role, "raysearch.trial_id": trial_id})


def _execute(config: ExperimentConfig, run_dir: Path, tracker: Tracker, state: RunState, address: str | None,
             restore: bool, callbacks=()) -> Summary:
    print(f"raysearch: run directory {run_dir}\nraysearch: MLflow {tracker.uri}"
          + ("" if tracker.enabled else " (unavailable: tracking off)"), flush=True)
    artifacts, storage, callbacks = run_dir / "artifacts", state.storage(config, run_dir), list(callbacks)
    rows, status, started = [], "FAILED", False
    try:
        started = start_ray(config, address)
        check_cluster(config)  # a request no node can satisfy would make Tune wait forever
        if config.sweep is not None:
            first = phases.meta_sweep
        else:
            first = phases.search if config.search.algorithm in ALGORITHMS else phases.sweep
        selected = first(config, storage, tracker, rows, restore, callbacks, artifacts)
        shared = [  # logged with the selecting trial and with the retraining
            run_dir / "config.yaml",
            _write_json(artifacts / "genotype.json", {"space": config.space.name, "genotype": selected.genotype}),
            _write_json(artifacts / "hparams.json", selected.hparams),
        ]
        tracker.log_artifacts(_child(tracker, "search", selected.trial_id), shared + selected.files)

        retrain = None
        if config.retrain.enabled and "test_accuracy" in selected.extra:
            print(f"raysearch: {config.search.algorithm}'s searched model is the result: no retraining", flush=True)
        elif config.retrain.enabled:
            retrain = phases.retrain(selected.config or config, storage, tracker, rows, restore, callbacks,
                                     selected)
            tracker.log_artifacts(_child(tracker, "retrain", retrain.metrics["trial_id"]), shared)

        # the trained network: the retraining's, or the one a final-model search trained
        model = keep_model(run_dir / MODEL_DIR, tracker, selected, retrain, config.tracking.register_model)
        summary = Summary(
            experiment=config.name, algorithm=config.search.algorithm, space=config.space.name,
            dataset=config.data.dataset, genotype=selected.genotype, hparams=selected.hparams,
            search_seconds=selected.seconds, retrain_seconds=retrain.metrics["time_total_s"] if retrain else None,
            val_accuracy=selected.val_accuracy,
            test_accuracy=retrain.metrics["test_acc"] if retrain else selected.extra.get("test_accuracy"),
            mlflow_experiment_id=tracker.experiment_id, mlflow_parent_run_id=tracker.parent_run_id,
            run_dir=str(run_dir), extra={**selected.extra, "tracking_uri": tracker.uri}, model=model,
        )
        tracker.log_metrics(tracker.parent_run_id, {k: getattr(summary, k) for k in SUMMARY_METRICS
                                                    if getattr(summary, k) is not None}, 0)
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
            stop_ray()
