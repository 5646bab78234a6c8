"""`raysearch.run`: one experiment = a search trial, then a retraining trial, on Ray Tune.

The CLI is a thin layer over this module, so notebooks and scripts get the same
run directory, MLflow runs and summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from raysearch.callbacks import MlflowCallback, ProgressCallback
from raysearch.config import ExperimentConfig
from raysearch.data import check_available
from raysearch.results import Summary, plot_encodings, plot_lr, write_results, write_summary
from raysearch.tracking import Tracker, default_uri, flatten

SEARCH_KEYS = ("train_loss", "val_acc", "derived_val_acc", "lr_factor", "weight_decay", "arch_entropy")
TRAIN_KEYS = ("train_loss", "train_acc", "val_acc", "test_acc", "lr")


class RunFailed(RuntimeError):
    """A trial of the experiment failed; the message carries the trial's reason."""


def make_run_dir(config: ExperimentConfig, output_dir=None) -> Path:
    run_dir = Path(output_dir) if output_dir else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir.resolve()


def start_ray(config: ExperimentConfig, address: str | None) -> bool:
    """Connect to `address`, or start a local Ray with this machine's CPUs; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or config.ray.address
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
        ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return True


def fit(trainable, param_space: dict, name: str, run_dir: Path, config: ExperimentConfig, callbacks):
    """Run one trial of `trainable` under Tune and return its Result.

    Tune keeps results and checkpoints under `ray.storage_path` (which must be
    shared by all nodes of a multi-node cluster), else inside the run directory.
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # our ProgressCallback prints; Tune's tables would bury it
    from ray import tune

    resources = {"cpu": config.ray.cpus_per_trial, "gpu": config.ray.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            name=name, storage_path=config.ray.storage_path or str(run_dir / "ray"), callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
        ),
    )
    return tuner.fit()[0]


def _row(config: ExperimentConfig, role: str, result, param_space: dict, genotype: str | None,
         val: float | None, test: float | None) -> dict:
    metrics = result.metrics or {}
    from raysearch.callbacks import numeric_metrics

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


def run(config: ExperimentConfig, output_dir=None, tracking_uri: str | None = None,
        address: str | None = None) -> Summary:
    """Search, retrain and evaluate `config`; every result lands in the run directory and MLflow."""
    from ray import tune

    from trainables.common import read_json
    from trainables.search import DERIVED_FILE, search_trainable
    from trainables.train import train_trainable

    check_available(config.data.dataset, config.data.root)  # before any resource is taken
    run_dir = make_run_dir(config, output_dir)
    artifacts = run_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    config_file = run_dir / "config.yaml"
    config_file.write_text(config.to_yaml())
    uri = tracking_uri or config.tracking.uri or default_uri(run_dir)
    tracker = Tracker(uri, config.tracking.experiment or config.name, config.tracking.timeout_s,
                      config.tracking.retries, artifact_location=(run_dir / "mlartifacts").as_uri()
                      if uri == default_uri(run_dir) else None)
    tracker.start(run_dir.name, flatten(config.to_dict()))
    tracker.log_artifacts(tracker.parent_run_id, [config_file])
    print(f"raysearch: run directory {run_dir}\nraysearch: MLflow {uri}"
          + ("" if tracker.enabled else " (unavailable: tracking off)"), flush=True)

    rows, status, started = [], "FAILED", False
    try:
        started = start_ray(config, address)
        # 1. search
        search_space = {"experiment": config.to_dict()}
        search_mlflow = MlflowCallback(tracker, "search")
        search = fit(search_trainable, search_space, "search", run_dir, config,
                     [search_mlflow, ProgressCallback("search", config.search.epochs, SEARCH_KEYS, "genotype")])
        if search.error is not None or search.checkpoint is None:
            rows.append(_row(config, "search", search, search_space, None, None, None))
            raise RunFailed(f"search trial failed: {rows[-1]['error']}")
        derived = read_json(search.checkpoint, DERIVED_FILE)
        genotype, hparams = derived["genotype"], derived["hparams"]
        val_acc = search.metrics["derived_val_acc"]
        rows.append(_row(config, "search", search, search_space, genotype, val_acc, None))
        search_files = [
            config_file,
            _write_json(artifacts / "genotype.json", {"space": config.space.name, "genotype": genotype}),
            _write_json(artifacts / "hparams.json", hparams),
            plot_encodings(derived["history"], derived["labels"], artifacts / "encodings.png"),
        ]
        if isinstance(hparams.get("lr"), list):
            search_files.append(plot_lr(hparams["lr"], artifacts / "lr_schedule.png"))
        search_run = next(iter(search_mlflow.run_ids.values()), None)
        tracker.log_artifacts(search_run, search_files)

        # 2. retraining of the derived configuration on search-train + search-val, then test
        test_acc = retrain_seconds = None
        if config.retrain.enabled:
            train_space = {"experiment": config.to_dict(), "genotype": genotype, "lr": "replayed per step",
                           "weight_decay": hparams["weight_decay"], "epochs": config.retrain_epochs}
            train_mlflow = MlflowCallback(tracker, "retrain")
            retrain = fit(tune.with_parameters(train_trainable, lr_schedule=hparams["lr"]), train_space, "retrain",
                          run_dir, config,
                          [train_mlflow, ProgressCallback("retrain", config.retrain_epochs, TRAIN_KEYS)])
            if retrain.error is not None:
                rows.append(_row(config, "retrain", retrain, train_space, genotype, None, None))
                raise RunFailed(f"retraining trial failed: {rows[-1]['error']}")
            test_acc, retrain_seconds = retrain.metrics["test_acc"], retrain.metrics["time_total_s"]
            rows.append(_row(config, "retrain", retrain, train_space, genotype, None, test_acc))
            tracker.log_artifacts(next(iter(train_mlflow.run_ids.values()), None), search_files[:3])

        summary = Summary(
            experiment=config.name, algorithm=config.search.algorithm, space=config.space.name,
            dataset=config.data.dataset, genotype=genotype, hparams=hparams,
            search_seconds=search.metrics["time_total_s"], retrain_seconds=retrain_seconds,
            val_accuracy=val_acc, test_accuracy=test_acc, mlflow_experiment_id=tracker.experiment_id,
            mlflow_parent_run_id=tracker.parent_run_id, run_dir=str(run_dir), extra={"tracking_uri": uri},
        )
        summary_file = write_summary(summary, run_dir)
        tracker.log_metrics(tracker.parent_run_id, {k: v for k, v in (
            ("val_accuracy", val_acc), ("test_accuracy", test_acc)) if v is not None}, step=0)
        tracker.log_artifacts(tracker.parent_run_id, [summary_file])
        status = "FINISHED"
        return summary
    finally:
        if rows:
            tracker.log_artifacts(tracker.parent_run_id, [write_results(rows, run_dir)])
        tracker.end(tracker.parent_run_id, status)
        if started:
            import ray

            ray.shutdown()
