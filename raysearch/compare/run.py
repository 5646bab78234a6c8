"""`raysearch compare`: every method at every seed under one budget of search seconds, each choice
retrained k times, at the end of the budget and at its anytime points; the run directory's files and one
MLflow tree (the comparison -> a run per method x seed -> its trials and retrainings).

Methods run one at a time on the whole cluster, so each gets the same
resources: a differentiable search in one trial takes every CPU of the
largest node (a baseline's trials share them, as its config says). Seed
index i runs every method with the same seed, and every choice is retrained
with the same k seeds, so the comparison is paired. A method x seed that
finished is kept by `raysearch resume`; one that was interrupted runs again
from its start (its budget is wall time, which a restored trial would not
measure truthfully), its MLflow runs deleted first.
"""

from __future__ import annotations

import functools
import json
import shutil
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ray.tune import Callback

from raysearch import phases
from raysearch.algorithms import ALGORITHMS
from raysearch.compare.budget import Incumbent, incumbent
from raysearch.compare.config import CONFIG_FILE, STATE_FILE, Comparison, cell_dir, load_comparison
from raysearch.compare.report import final_tests, render, write_rows
from raysearch.data import check_available, load_splits
from raysearch.joint import JointSpace
from raysearch.model import MODEL_DIR, build_network, size
from raysearch.phases import RunFailed, RunInterrupted
from raysearch.preflight import check_cluster, check_config
from raysearch.product import keep_model
from raysearch.results import write_results
from raysearch.ray_session import start_ray, stop_ray
from raysearch.runner import RunDirError
from raysearch.spaces import build_space
from raysearch.tracking import Tracker, adopt_credentials, default_uri, flatten
from raysearch.ui import share_view
from trainables.common import read_json
from trainables.search import DERIVED_FILE

CELL_FILE = "cell.json"
_splits = functools.lru_cache(maxsize=2)(load_splits)


class Incumbents(Callback):
    """Records what a search phase's trials reported and when (raysearch.compare.budget): a search's
    derived configuration at each epoch (from its checkpoint), or a baseline trial's val_acc per epoch."""

    def __init__(self, search: bool):
        self.search, self.records, self.started = search, [], time.monotonic()

    def _record(self, trial, epoch: int, val, **choice) -> None:
        self.records.append({"t": time.monotonic() - self.started, "trial": trial.trial_id, "epoch": int(epoch),
                             "val": val, **choice})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.search and "val_acc" in result:
            self._record(trial, result["epoch"], result["val_acc"], config=dict(trial.config))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.search:  # Tune processes a result's checkpoint right after the result
            derived, last = read_json(checkpoint, DERIVED_FILE), trial.last_result
            self._record(trial, last["epoch"], last.get("derived_val_acc"), genotype=derived["genotype"],
                         hparams=derived["hparams"], test=last.get("test_acc"))


@dataclass(frozen=True)
class ComparisonSummary:
    """What `raysearch compare` prints at the end: the table, and where its files and MLflow runs are."""

    text: str  # the comparison table (comparison.txt)
    run_dir: str
    tracking_uri: str
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None

    def table(self) -> str:
        return (f"{self.text}\n\nfiles: {self.run_dir}/comparison.parquet, comparison.txt, anytime.png, final.png, "
                f"accuracy_vs_params.png\nMLflow: {self.tracking_uri} (experiment {self.mlflow_experiment_id or '-'}, "
                f"run {self.mlflow_parent_run_id or '-'})")


@dataclass(frozen=True)
class CompareState:
    """comparison.json: what `resume` needs beyond compare.yaml."""

    run_id: str
    tracking_uri: str | None
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None


def _tracker(comparison: Comparison, run_dir: Path, uri: str | None) -> Tracker:
    t = comparison.tracking
    local = uri is None and t.get("uri") is None
    return Tracker(uri or t.get("uri") or default_uri(run_dir), t.get("experiment") or comparison.name,
                   t.get("timeout_s", 5.0), t.get("retries", 1),
                   artifact_location=(run_dir / "mlartifacts").as_uri() if local else None)


def _preflight(comparison: Comparison, address: str | None) -> None:
    for method in comparison.methods:
        config = comparison.experiment(method, 0)
        check_available(config.data.dataset, config.data.root)
        check_config(config, address)


def compare(comparison: Comparison, output_dir=None, tracking_uri: str | None = None,
            address: str | None = None) -> ComparisonSummary:
    """Run every method x seed of `comparison`; every result lands in the run directory and MLflow."""
    tracking_uri = adopt_credentials(tracking_uri)
    _preflight(comparison, address)
    run_dir = Path(output_dir or Path("runs") / f"{comparison.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (run_dir / STATE_FILE).exists():
        raise RunDirError(f"{run_dir} already holds a comparison: continue it with `raysearch resume {run_dir}` "
                          "or choose another --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(comparison.to_yaml())
    c = comparison.compare
    tracker = _tracker(comparison, run_dir, tracking_uri).start(run_dir.name, {
        **flatten(asdict(c), "compare."), "methods": ", ".join(comparison.methods)})
    # the UI's columns: each method x seed's metrics, and each method's mean on the comparison's run
    share_view(tracker, ["test_accuracy", "search_seconds", "trial_epochs",
                         *(f"test_accuracy.{m}" for m in comparison.methods)])
    tracker.log_artifacts(tracker.parent_run_id, [run_dir / CONFIG_FILE])
    state = CompareState(uuid.uuid4().hex[:8], tracking_uri or comparison.tracking.get("uri"), tracker.experiment_id,
                         tracker.parent_run_id)
    (run_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
    return _execute(comparison, run_dir, tracker, address)


def resume_comparison(run_dir: Path, address: str | None = None) -> ComparisonSummary:
    """Continue an interrupted comparison: finished method x seed runs are kept, the rest run."""
    run_dir = Path(run_dir).resolve()
    try:
        state = CompareState(**json.loads((run_dir / STATE_FILE).read_text()))
    except (ValueError, TypeError) as err:
        raise RunDirError(f"{run_dir / STATE_FILE} is damaged ({err}); start a new comparison") from None
    comparison = load_comparison(run_dir / CONFIG_FILE)
    _preflight(comparison, address)
    tracker = _tracker(comparison, run_dir, state.tracking_uri)
    tracker.reopen(state.mlflow_experiment_id, state.mlflow_parent_run_id)
    return _execute(comparison, run_dir, tracker, address)


def _largest_node_cpus() -> float:
    import ray

    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=1.0)


def _execute(comparison: Comparison, run_dir: Path, tracker: Tracker, address: str | None) -> ComparisonSummary:
    c = comparison.compare
    print(f"raysearch: comparison {comparison.name}: {len(comparison.methods)} methods x {c.seeds} seeds, "
          f"{c.budget_seconds:g} s of search each, choices retrained {c.retrain_seeds}x at "
          f"{', '.join(f'{f:g}' for f in c.fractions)} of the budget\nraysearch: run directory {run_dir}\n"
          f"raysearch: MLflow {tracker.uri}" + ("" if tracker.enabled else " (unavailable: tracking off)"), flush=True)
    first = comparison.experiment(next(iter(comparison.methods)), 0)
    started, status = False, "FAILED"
    try:
        started = start_ray(first, address)
        cpus = _largest_node_cpus()
        cells = [(i, method) for i in range(c.seeds) for method in comparison.methods]
        rows = []
        for n, (i, method) in enumerate(cells, 1):
            where = f"[compare {n}/{len(cells)}] {method} seed {i}"
            folder = cell_dir(run_dir, method, i)
            if (folder / CELL_FILE).exists():
                rows += json.loads((folder / CELL_FILE).read_text())["rows"]
                print(f"{where}: finished earlier, kept", flush=True)
                continue
            config = comparison.experiment(method, i, cpus)
            check_cluster(config)
            _discard(tracker, folder, method, i)
            rows += _cell(comparison, method, i, config, folder, tracker, where)
            write_rows(rows, run_dir)  # after every method x seed, so `raysearch report` reads a partial one too
        text, files = render(run_dir)
        tracker.log_artifacts(tracker.parent_run_id, [run_dir / "comparison.parquet", *files])
        means = {f"test_accuracy.{m}": statistics.mean(done) for m, per in final_tests(rows).items()
                 if (done := [v for v in per.values() if v is not None])}
        tracker.log_metrics(tracker.parent_run_id, means, 0)
        status = "FINISHED"
        return ComparisonSummary(text, str(run_dir), tracker.uri, tracker.experiment_id, tracker.parent_run_id)
    except (RunInterrupted, KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        tracker.end_open_children(status)
        tracker.end(tracker.parent_run_id, status)
        if started:
            stop_ray()


def _cell_tags(method: str, seed_index: int) -> dict[str, str]:
    return {"raysearch.role": "method", "raysearch.method": method, "raysearch.seed_index": str(seed_index)}


def _discard(tracker: Tracker, folder: Path, method: str, seed_index: int) -> None:
    """Remove what an interrupted attempt at this method x seed left: its files and MLflow runs."""
    tracker.delete_tree(tracker.find_child(_cell_tags(method, seed_index)))
    if folder.exists():
        shutil.rmtree(folder)


def _decoded(records: list[dict], config) -> list[dict]:
    """Baseline records with their configuration decoded into genotype and hparams (search records have them)."""
    if config.search.algorithm in ALGORITHMS:
        return records
    options = config.search.options
    joint = JointSpace(build_space(config.space), options.lr_range, options.weight_decay_range)
    out = []
    for r in records:
        genotype, hparams = joint.decode(r["config"])
        out.append({**r, "genotype": genotype.to_string(), "hparams": hparams})
    return out


def _size(config, genotype: str) -> tuple[int, float]:
    """(trainable parameters, multiply-accumulates per image) of the network of `genotype`."""
    shape = _splits(config.data).shape
    return size(build_network(config.space, genotype, shape), shape)


def _cell(comparison: Comparison, method: str, seed_index: int, config, folder: Path, tracker: Tracker,
          where: str) -> list[dict]:
    """One method at one seed: its search phase under the budget, then the retraining of its choices (a
    search whose trained model is the result, DHA, is not retrained: its model's test accuracy at each
    point is its row's, one value per seed)."""
    c, search = comparison.compare, config.search.algorithm in ALGORITHMS
    final_model = search and ALGORITHMS[config.search.algorithm].build.final_model
    algorithm = config.search.algorithm if config.sweep is None else f"{config.search.algorithm} sweep"
    print(f"{where}: {algorithm}, budget {c.budget_seconds:g} s", flush=True)
    cell = tracker.nested(f"{method} seed {seed_index}", flatten(config.to_dict()), _cell_tags(method, seed_index))
    storage, log, trial_rows = str(folder / "ray"), Incumbents(search), []
    base = {"comparison": comparison.name, "method": method, "algorithm": algorithm,
            "seed_index": seed_index, "seed": config.seed}
    points = [(f, f * c.budget_seconds) for f in c.fractions]
    started, status = time.monotonic(), "FAILED"
    try:
        phase = phases.meta_sweep if config.sweep is not None else phases.search if search else phases.sweep
        selected = phase(config, storage, cell, trial_rows, False, [log], folder / "artifacts")
        seconds = time.monotonic() - started
        records = _decoded(log.records, config)
        incumbents = [incumbent(records, at) for _, at in points[:-1]]
        incumbents.append(Incumbent(selected.genotype, selected.hparams, selected.val_accuracy, seconds,
                                    selected.extra["trial_epochs"], selected.extra.get("test_accuracy")))
        end = "stopped at budget" if selected.extra["stopped_at_budget"] else "finished early"
        choices = list(dict.fromkeys((i.genotype, json.dumps(i.hparams)) for i in incumbents if i is not None))
        seeds = list(range(c.retrain_seeds))
        retraining = "its trained model is the result" if final_model else \
            f"retraining {len(choices)} choice(s) x {len(seeds)} seeds"
        print(f"{where}: {seconds:.1f} of {c.budget_seconds:g} s, {incumbents[-1].trial_epochs} trial-epochs, "
              f"{end}; {retraining}", flush=True)
        # at the method's own CPUs per trial (a search's were raised to the whole node for its search only);
        # a sweep's choices under its experiment's own values, whichever search derived them
        results = {} if final_model else phases.retrain_choices(
            comparison.experiment(method, seed_index), storage, cell, trial_rows,
            [(g, json.loads(h)) for g, h in choices], seeds, [])
        rows = []
        for (fraction, at), inc in zip(points, incumbents):
            if inc is None:
                rows.append({**base, "budget_fraction": fraction, "budget_seconds": at, "status": "no choice yet",
                             "search_seconds": seconds})
                continue
            index = choices.index((inc.genotype, json.dumps(inc.hparams)))
            if final_model:
                tests, retrain_seconds = [inc.test_accuracy], None
            else:
                tests = [results[(index, s)].metrics["test_acc"] for s in seeds]
                retrain_seconds = statistics.mean(results[(index, s)].metrics["time_total_s"] for s in seeds)
            params, macs = _size(config, inc.genotype)
            rows.append({**base, "budget_fraction": fraction, "budget_seconds": at, "used_seconds": inc.seconds,
                         "trial_epochs": inc.trial_epochs, "genotype": inc.genotype,
                         "hparams": json.dumps(inc.hparams), "val_accuracy": inc.val_accuracy,
                         "test_mean": statistics.mean(tests), "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                         "test_accuracies": tests, "params": params, "flops": macs, "search_seconds": seconds,
                         "retrain_seconds": retrain_seconds, "status": end})
        final = rows[-1]
        keep_model(folder / MODEL_DIR, cell, selected, results.get((index, seeds[0])),  # the first seed's
                   config.tracking.register_model, {"method": method, "seed_index": str(seed_index)})
        cell.log_metrics(cell.parent_run_id, {"test_accuracy": final["test_mean"], "search_seconds": seconds,
                                              "trial_epochs": final["trial_epochs"]}, 0)
        status = "FINISHED"
    except RunFailed as err:  # one method x seed failing leaves the others to compare
        print(f"{where}: failed: {err}", flush=True)
        rows = [{**base, "budget_fraction": f, "budget_seconds": at, "status": f"failed: {err}"[:500],
                 "search_seconds": time.monotonic() - started} for f, at in points]
    finally:
        if trial_rows:  # the trials' and retrainings' rows, as `raysearch run` writes them
            cell.log_artifacts(cell.parent_run_id, [write_results(trial_rows, folder)])
        cell.end_open_children("KILLED" if status == "FAILED" else status)
        cell.end(cell.parent_run_id, status)
    # the rows, and when each trial reported what (without hparams: a search's per-step lr lists are long)
    reports = [{k: v for k, v in r.items() if k in ("t", "trial", "epoch", "val", "genotype")} for r in log.records]
    (folder / CELL_FILE).write_text(json.dumps({"rows": rows, "reports": reports}))
    return rows
