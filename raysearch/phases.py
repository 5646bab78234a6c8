"""The phases of a run, each one Tune experiment: a differentiable search (one trial), a black-box
sweep (many trials), or a meta-sweep (many searches, `raysearch sweep`), then the retraining of what
was selected (one trial).

Every phase appends one row per trial to `rows` (results.parquet) and logs one
MLflow child run per trial. `restore=True` continues the phase's stored Tune
experiment: finished trials are not run again, unfinished ones continue from
their last checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from raysearch import meta_sweep as meta
from raysearch.baselines import BASELINES
from raysearch.baselines.sweep import EpochBudget
from raysearch.callbacks import (MlflowCallback, ProgressCallback, ReleaseShards, SweepProgressCallback,
                                 numeric_metrics)
from raysearch.config import ExperimentConfig
from raysearch.joint import JointSpace
from raysearch.results import search_files
from raysearch.search import planned_epochs
from raysearch.spaces import build_space
from raysearch.tracking import Tracker
from raysearch.training import DIVERGED
from trainables.common import read_json
from trainables.search import DERIVED_FILE, search_trainable
from trainables.sweep import sweep_trainable
from trainables.train import choice_trainable, train_trainable

SEARCH_KEYS = ("train_loss", "val_acc", "derived_val_acc", "lr_factor", "weight_decay", "arch_entropy", "decided")
SWEEP_KEYS = ("train_loss", "val_acc")
TRAIN_KEYS = ("train_loss", "train_acc", "test_acc", "lr")


class RunFailed(RuntimeError):
    """A trial of the experiment failed; the message carries the trial's reason."""


class RunInterrupted(RuntimeError):
    """The run stopped before its trials finished (Ctrl-C, SIGTERM); `raysearch resume` continues it."""


@dataclass(frozen=True)
class Selected:
    """What the first phase chose, and what it cost."""

    genotype: str  # the architecture, in the space's string format
    hparams: dict  # lr (a float, or a per-step list from a search) and weight_decay
    val_accuracy: float  # search-val accuracy behind the choice
    seconds: float  # wall time of the phase
    trial_id: str  # the trial that produced it (its MLflow child run gets the artifacts)
    files: list = field(default_factory=list)  # files describing the phase (plots, the encodings' history)
    extra: dict = field(default_factory=dict)  # counts for the summary (trials, failures, trial-epochs)
    config: ExperimentConfig | None = None  # the experiment it retrains under (a meta-sweep's best search's)
    checkpoint: object = None  # a final-model search's (DHA) last checkpoint, which holds its model


def _drop_missing_log_warnings(record: logging.LogRecord) -> bool:
    # Tune warns when a paused trial resumes before its result.json/progress.csv reached the
    # storage, and when a restored experiment holds a trial that had not reported yet; the files are
    # written as the trial goes on, so the warnings only alarm users.
    return not record.getMessage().startswith(("Remote file not found", "Failed to fetch metrics"))


def fit(trainable, param_space: dict, name: str, storage: str, config: ExperimentConfig, callbacks,
        restore: bool = False, parts=None, time_budget_s: float | None = None, reuse_actors: bool = False):
    """Run `trainable` under Tune and return the ResultGrid: one trial (Tune stops it at `time_budget_s`
    wall seconds), or a sweep's `parts` (`raysearch.baselines.sweep.TuneParts`: searcher, scheduler,
    metric, budget).

    Tune keeps results and checkpoints in `storage`/`name`; with `restore`, a
    stored experiment continues with the callbacks, searcher and scheduler
    pickled with it. `reuse_actors`: a grid's trials run in the same processes.
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # our ProgressCallback prints; Tune's tables would bury it
    # Keeping 2 checkpoints makes Tune snapshot its experiment state at least every 2 epochs, so a
    # killed driver loses at most one epoch on `resume`; frequent snapshots are intended here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for logger_name in ("ray.tune.logger.logger", "ray.tune.analysis.experiment_analysis"):
        tune_logger = logging.getLogger(logger_name)
        if _drop_missing_log_warnings not in tune_logger.filters:
            tune_logger.addFilter(_drop_missing_log_warnings)
    trainable = tune.with_resources(trainable, meta.tune_resources(config, sharded=name == "search"))
    if config.ray.workers > 1:  # Train's worker groups of trials Tune stops must not keep their CPUs
        callbacks = [*callbacks, ReleaseShards()]
    path = f"{storage}/{name}"
    if restore and tune.Tuner.can_restore(path):
        try:
            return tune.Tuner.restore(path, trainable, resume_errored=True).fit()
        except ValueError as err:  # stopped before Tune saved any experiment state
            print(f"raysearch: {name}: nothing to restore ({err}); starting this phase afresh", flush=True)
    stop, tune_config = None, tune.TuneConfig(num_samples=1, time_budget_s=time_budget_s, reuse_actors=reuse_actors)
    if parts is not None:
        stop = parts.stop
        if stop is not None:  # listed as a callback too, so Tune saves its state with the experiment
            callbacks = [*callbacks, stop]
        tune_config = tune.TuneConfig(
            metric=parts.metric, mode=parts.mode, search_alg=parts.search_alg, scheduler=parts.scheduler,
            num_samples=parts.num_samples, max_concurrent_trials=parts.max_concurrent,
            time_budget_s=parts.time_budget_s, reuse_actors=parts.reuse_actors)
    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks, verbose=0, stop=stop,
            failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner.fit()


def _error(result) -> str | None:
    """Why a trial failed: its exception, or the divergence a sweep trial reported; None if it did not."""
    if result.error is not None:
        return str(result.error).strip().splitlines()[-1][:1000]
    return (result.metrics or {}).get(DIVERGED)


def row(config: ExperimentConfig, role: str, result, trial_config: dict, genotype: str | None = None,
        val: float | None = None, test: float | None = None, hparams: dict | None = None) -> dict:
    """One results.parquet row (see raysearch.results.RESULT_SCHEMA)."""
    metrics, error = result.metrics or {}, _error(result)
    return {
        "experiment": config.name, "role": role, "trial_id": _row_id(result),
        "status": "ERROR" if error else "TERMINATED", "error": error,
        "epochs": metrics.get("epoch"), "seconds": metrics.get("time_total_s"),
        "genotype": genotype, "val_accuracy": val, "test_accuracy": test,
        "metrics": json.dumps(numeric_metrics(metrics)), "config": json.dumps(trial_config, default=str),
        "hparams": None if hparams is None else json.dumps(hparams),
    }


def _trial_id(result) -> str | None:
    """The trial id in a result's directory name (`<trainable>_<trial id>_<number>_...`), for a trial
    that failed before it reported anything."""
    # Tune's own ids are `<5 hex>_<5 digits>`; a searcher's (BOHB) are 8 hex digits.
    match = re.search(r"_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})_\d+_", Path(result.path).name) if result.path else None
    return match.group(1) if match else None


def _finished(result, role: str, epochs: int, rows: list, failed_row: dict, budget_spent: bool = False) -> None:
    """Raise unless the phase's single trial ran all its epochs (or, `budget_spent`, at least one): a trial
    error, or an interruption."""
    if result.error is not None:
        rows.append(failed_row)
        raise RunFailed(f"{role} trial failed: {failed_row['error']}")
    if budget_spent and not (result.metrics or {}).get("epoch"):  # stopped by its time budget before an epoch
        rows.append(failed_row)
        raise RunFailed(f"the {role} trial reported no epoch within its budget of search.budget_seconds")
    if budget_spent:
        epochs = 1  # stopped by its time budget: it derives from its last epoch
    if (result.metrics or {}).get("epoch", 0) < epochs:  # Tune returns normally on Ctrl-C
        raise RunInterrupted(f"the {role} trial stopped after epoch {(result.metrics or {}).get('epoch', 0)} "
                             f"of {epochs}")


def search(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool,
           callbacks: list, artifacts: Path) -> Selected:
    """A differentiable search: one trial; the configuration it derives at the end, or at its last epoch
    when `search.budget_seconds` stopped it."""
    space, planned, budget = {"experiment": config.to_dict()}, planned_epochs(config), config.search.budget_seconds
    started = time.monotonic()
    result = fit(search_trainable, space, "search", storage, config, [
        MlflowCallback(tracker, "search"), ProgressCallback("search", planned, SEARCH_KEYS, "genotype"),
        *callbacks], restore, time_budget_s=budget)[0]
    # Early stopping ends a search before its planned epochs; a finished search says it is done.
    done = bool((result.metrics or {}).get("search_done"))
    spent = not done and budget is not None and time.monotonic() - started >= budget
    _finished(result, "search", result.metrics["epoch"] if done else planned, rows,
              row(config, "search", result, space), spent)
    derived = read_json(result.checkpoint, DERIVED_FILE)
    rows.append(row(config, "search", result, space, derived["genotype"], result.metrics["derived_val_acc"],
                    hparams=derived["hparams"]))
    if spent:
        print(f"raysearch: the search reached its budget of {budget:g} s after epoch {result.metrics['epoch']} "
              f"of {planned}; it derives from there", flush=True)
    files, extra = search_files(derived, artifacts), {"stopped_at_budget": spent, "trial_epochs": result.metrics["epoch"]}
    final_model = "test_acc" in result.metrics  # a final-model search (DHA): its model is the result, tested as it is
    if final_model:
        extra["test_accuracy"] = result.metrics["test_acc"]
    return Selected(derived["genotype"], derived["hparams"], result.metrics["derived_val_acc"],
                    result.metrics["time_total_s"], result.metrics["trial_id"], files, extra=extra,
                    checkpoint=result.checkpoint if final_model else None)


def _creation_index(result) -> int:
    """Tune numbers trials as it creates them, in the tag that starts each trial's directory name
    (`<trainable>_<trial id>_<number>_<config>_<date>`); failed trials have no `experiment_tag` result."""
    tag = Path(result.path).name.split(f"{_row_id(result)}_", 1)[1]
    return int(tag.split("_", 1)[0])


def sweep(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool,
          callbacks: list, artifacts: Path) -> Selected:
    """A black-box baseline: many trials, each training one configuration; the best one.

    The best is the highest search-val accuracy among the trials that reached
    the most epochs (the top fidelity), as BOHB's incumbent is chosen.
    """
    options, epochs = config.search.options, config.search.epochs
    joint = JointSpace(build_space(config.space), options.lr_range, options.weight_decay_range)
    parts = BASELINES[config.search.algorithm].build(config, joint)
    parts = dataclasses.replace(parts, stop=EpochBudget(options.budget_epochs), time_budget_s=config.search.budget_seconds)
    trainable = tune.with_parameters(train_trainable, experiment=config.to_dict())
    started = time.monotonic()
    grid = fit(trainable, {**parts.param_space, "epochs": epochs, "holdout": "val"}, "search", storage, config, [
        MlflowCallback(tracker, "search"), ProgressCallback("search", epochs, SWEEP_KEYS, DIVERGED, per_trial=True),
        *callbacks], restore, parts)
    seconds = time.monotonic() - started
    # In creation order (Tune's own order is not); a trial the budget stopped before it started has no config.
    results = sorted((r for r in grid if r.config is not None), key=_creation_index)
    for result in results:
        genotype, hparams = joint.decode(result.config)
        rows.append(row(config, "search", result, result.config, genotype.to_string(),
                        (result.metrics or {}).get("val_acc"), hparams=hparams))
    _end_sweep(grid, results, tracker, "trials")
    done = [r for r in results if _error(r) is None and "val_acc" in (r.metrics or {})]
    budget = config.search.budget_seconds
    if not done:
        first = next((_error(r) for r in results if _error(r)), None)
        if first is None:  # nothing failed: the wall-clock cap came before any trial's first epoch
            raise RunFailed(f"none of the {len(results)} sweep trials reported an epoch within search.budget_seconds "
                            f"= {budget:g}" if budget else f"none of the {len(results)} sweep trials reported an epoch")
        raise RunFailed(f"every one of the {len(results)} sweep trials failed; first: {first}")
    top = max(r.metrics["epoch"] for r in done)
    best = max((r for r in done if r.metrics["epoch"] == top), key=lambda r: r.metrics["val_acc"])
    genotype, hparams = joint.decode(best.config)
    extra = {  # stopped_at_budget: the sweep ended on its wall time, not on its epochs or its searcher
             "trials": len(results), "failed_trials": len(results) - len(done),
             "trial_epochs": sum((r.metrics or {}).get("epoch", 0) for r in results),
             "stopped_at_budget": budget is not None and seconds >= budget and not parts.stop.stop_all()}
    return Selected(genotype.to_string(), hparams, best.metrics["val_acc"], seconds, best.metrics["trial_id"],
                    extra=extra)


def _training_choice(searched, genotype: str, hparams: dict, schedules: dict, name: str) -> dict:
    """The trainables.train config of a (genotype, hparams) choice; a per-step lr list goes into
    `schedules` under `name`, which the config's "lr" gives instead."""
    lr = hparams["lr"]
    if isinstance(lr, list):
        schedules[name], lr = lr, name
    return {**searched.to_choices(searched.parse(genotype)), "lr": lr, "weight_decay": hparams["weight_decay"],
            "optimizer": hparams.get("optimizer", "sgd")}


def retrain(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool,
            callbacks: list, selected: Selected):
    """Retrain the selected configuration on search-train + search-val and test it; returns its Result."""
    schedules = {}
    space = {**_training_choice(build_space(config.space), selected.genotype, selected.hparams, schedules,
                                "replayed per step"), "epochs": config.retrain_epochs, "holdout": "test"}
    # The experiment and a per-step lr list go through Ray's object store, not into every Tune result.
    trainable = tune.with_parameters(train_trainable, experiment=config.to_dict(), lr_schedules=schedules or None)
    result = fit(trainable, space, "retrain", storage, config, [
        MlflowCallback(tracker, "retrain"), ProgressCallback("retrain", config.retrain_epochs, TRAIN_KEYS),
        *callbacks], restore)[0]
    _finished(result, "retraining", config.retrain_epochs, rows, row(config, "retrain", result, space,
                                                                      selected.genotype))
    rows.append(row(config, "retrain", result, space, selected.genotype, test=result.metrics["test_acc"],
                    hparams=selected.hparams))
    return result


def retrain_choices(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, choices: list[tuple],
                    seeds: list[int], callbacks: list) -> dict:
    """Retrain every (genotype, hparams) of `choices` with every seed of `seeds`, as many at once as the
    resources allow, on search-train + search-val, and test them: {(choice index, seed): its Tune Result}
    (its metrics, and its checkpoint holding the trained model).
    `raysearch compare` retrains each method's choices at its budget points this way."""
    searched, schedules = build_space(config.space), {}
    grid = [{"index": index, **_training_choice(searched, genotype, hparams, schedules, f"per-step schedule {index}")}
            for index, (genotype, hparams) in enumerate(choices)]
    trainable = tune.with_parameters(choice_trainable, experiment=config.to_dict(), lr_schedules=schedules or None)
    space = {"choice": tune.grid_search(grid), "seed": tune.grid_search(list(seeds)), "epochs": config.retrain_epochs}
    grid_results = fit(trainable, space, "retrain", storage, config, [
        MlflowCallback(tracker, "retrain"),
        ProgressCallback("retrain", config.retrain_epochs, TRAIN_KEYS, per_trial=True), *callbacks],
        reuse_actors=True)  # a process per retraining would start torch and load the data each time
    out = {}
    for result in grid_results:
        index, seed = result.config["choice"]["index"], result.config["seed"]
        genotype, hparams = choices[index]
        _finished(result, "retraining", config.retrain_epochs, rows, row(config, "retrain", result, result.config,
                                                                          genotype, hparams=hparams))
        rows.append(row(config, "retrain", result, result.config, genotype, test=result.metrics["test_acc"],
                        hparams=hparams))
        out[(index, seed)] = result
    return out


def meta_sweep(config: ExperimentConfig, storage: str, tracker: Tracker, rows: list, restore: bool,
               callbacks: list, artifacts: Path) -> Selected:
    """`raysearch sweep`: many searches of `config`'s algorithm, each with meta-hyper-parameters sampled
    from `sweep.params`, under random / ASHA / BOHB on the searches' per-epoch `sweep.metric`.

    Selected: the best, by the metric at its last epoch, of the searches that ran to their end (not
    stopped by the scheduler; if none did, of those that reached the most epochs). Its derived
    configuration is retrained under its own experiment (the config with its sampled values).
    """
    sweep, space = config.sweep, meta.MetaSpace(config.sweep.params)
    max_t, limit = meta.max_epochs(config), meta.concurrency(config)
    parts = meta.build_parts(config, space, max_t, limit)
    print(f"raysearch: sweep of {sweep.num_samples} {config.search.algorithm} searches over "
          f"{', '.join(space.fields)} ({sweep.algorithm} on {sweep.metric}, up to {max_t} epochs each, "
          f"{limit} at once)", flush=True)
    # The experiment goes through Ray's object store: a trial's config holds only its sampled values.
    trainable = tune.with_parameters(sweep_trainable, experiment=config.without_sweep().to_dict(), space=space)
    started = time.monotonic()
    with _quiet_trial_failures():
        grid = fit(trainable, parts.param_space, "search", storage, config, [
            MlflowCallback(tracker, "search"),
            SweepProgressCallback("search", max_t, SEARCH_KEYS, "genotype", sweep.metric, sweep.algorithm),
            *callbacks], restore, parts)
    seconds = time.monotonic() - started
    results = sorted((r for r in grid if r.config is not None), key=_creation_index)
    derived = {id(r): read_json(r.checkpoint, DERIVED_FILE) if r.checkpoint else None for r in results}
    search_rows = [row(config, "search", r, space.values(r.config), (derived[id(r)] or {}).get("genotype"),
                       (r.metrics or {}).get("derived_val_acc"), hparams=(derived[id(r)] or {}).get("hparams"))
                   for r in results]
    rows.extend(search_rows)
    children = _end_sweep(grid, results, tracker, "searches")
    ok = [r for r in results if _error(r) is None and sweep.metric in (r.metrics or {}) and derived[id(r)]]
    if not ok:
        raise RunFailed(f"every one of the {len(results)} searches of the sweep failed; first: "
                        f"{next((_error(r) for r in results if _error(r)), 'no result')}")
    # Searches that ran to their end (early stopping included) rank above those a scheduler stopped.
    pool = [r for r in ok if r.metrics.get("search_done")] or [
        r for r in ok if r.metrics["epoch"] == max(r.metrics["epoch"] for r in ok)]
    best = (max if sweep.mode == "max" else min)(pool, key=lambda r: r.metrics[sweep.metric])
    for r in ok:  # each search's encodings go to its own MLflow run; the best's go with Selected
        if r is not best:
            folder = artifacts / "searches" / meta.trial_number(_row_id(r))
            tracker.log_artifacts(children[id(r)], search_files(derived[id(r)], folder))
    entries = meta.entries(search_rows, sweep.metric, sweep.algorithm, _row_id(best))
    print("\n" + meta.table(entries, space.fields, sweep.metric) + "\n", flush=True)
    d = derived[id(best)]
    budget = config.search.budget_seconds
    extra = {"sweep_algorithm": sweep.algorithm, "trials": len(results), "failed_trials": len(results) - len(ok),
             "stopped_trials": sum(e["status"].startswith("stopped") for e in entries),
             "trial_epochs": sum((r.metrics or {}).get("epoch", 0) for r in results),
             "best_params": space.values(best.config), "best_trial": _row_id(best),
             "stopped_at_budget": budget is not None and seconds >= budget}
    return Selected(d["genotype"], d["hparams"], best.metrics["derived_val_acc"], seconds, _row_id(best),
                    search_files(d, artifacts), extra, config.without_sweep(space.values(best.config)))


@contextlib.contextmanager
def _quiet_trial_failures():
    """Drop Tune's traceback per failed trial and its closing list of them: in a sweep a search may
    fail while the others go on, and SweepProgressCallback prints one line with the reason and the
    traceback's file instead."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Trial task failed for trial", "Trials did not complete"))

    loggers = [logging.getLogger(name) for name in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)


def _end_sweep(grid, results: list, tracker: Tracker, what: str) -> dict:
    """Raise RunInterrupted if a sweep's trials did not all end (Tune returns normally on Ctrl-C); else end
    every trial's MLflow child run (trials that ended paused, or paused when a resumed sweep was
    interrupted, are still open) and return {id(result): child run id}."""
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if unfinished:
        raise RunInterrupted(f"the sweep stopped with {unfinished} {what} unfinished")
    children = {id(r): tracker.find_child({"raysearch.role": "search", "raysearch.trial_id": _row_id(r)})
                for r in results}
    for r in results:
        tracker.end(children[id(r)], "FAILED" if _error(r) else "FINISHED")
    return children


def _row_id(result) -> str | None:
    return (result.metrics or {}).get("trial_id") or _trial_id(result)

