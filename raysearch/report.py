"""`raysearch report RUN_DIR`: the tables and plots of a finished run, sweep or comparison again, from its
files alone (nothing runs).

A comparison's come from comparison.parquet (raysearch.compare.report). A
run's or a sweep's: the end-of-sweep table of a `raysearch sweep` (its
searches' rows of results.parquet), a table of every trial (results.parquet)
and the summary the run printed (summary.json); every search's encodings.png
and lr_schedule.png are drawn again from its encodings.json and derived
learning rates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from raysearch import meta_sweep as meta
from raysearch.compare.report import PARQUET as COMPARISON_PARQUET
from raysearch.compare.report import render as render_comparison
from raysearch.config import load_config
from raysearch.results import Summary, plot_search

COLUMNS = ("role", "trial", "status", "epochs", "seconds", "val acc", "test acc", "lr", "weight decay", "genotype")


def render(run_dir) -> tuple[str, list[Path]]:
    """(the text `raysearch report` prints, the files it wrote) of a finished run, sweep or comparison."""
    run_dir = Path(run_dir)
    if (run_dir / COMPARISON_PARQUET).is_file():
        return render_comparison(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run, sweep or comparison (no summary.json or "
                                f"{COMPARISON_PARQUET}); an interrupted one continues with `raysearch resume {run_dir}`")
    summary = Summary(**json.loads((run_dir / "summary.json").read_text()))
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    parts = [trials_table(rows), summary.table()]
    config = load_config(run_dir / "config.yaml")
    if config.sweep is not None:  # the table `raysearch sweep` printed when its searches ended
        s = config.sweep
        entries = meta.entries([r for r in rows if r["role"] == "search"], s.metric, s.algorithm,
                               summary.extra.get("best_trial"))
        parts.insert(0, meta.table(entries, [p.field for p in s.params], s.metric))
    return "\n\n".join(parts), _plots(run_dir, rows)


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _lr(lr) -> str:
    if isinstance(lr, list):  # a search's per-step list
        return f"{lr[0]:.3g} -> {lr[-1]:.3g}" if lr else "-"
    return _number(lr)


def trials_table(rows: list[dict]) -> str:
    """A row per trial of results.parquet: its role, outcome, cost, accuracies and configuration."""
    lines = []
    for r in rows:
        hparams = json.loads(r["hparams"]) if r["hparams"] else {}
        lines.append([r["role"], r["trial_id"] or "-", r["status"] if not r["error"] else "ERROR: " +
                      r["error"][:60], str(r["epochs"] or 0), _number(r["seconds"], 3), _number(r["val_accuracy"]),
                      _number(r["test_accuracy"]), _lr(hparams.get("lr")), _number(hparams.get("weight_decay")),
                      r["genotype"] or "-"])
    widths = [max(len(row[i]) for row in [COLUMNS, *lines]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [COLUMNS, *lines])


def _plots(run_dir: Path, rows: list[dict]) -> list[Path]:
    """encodings.png (and lr_schedule.png for a per-step lr) beside every encodings.json of the run: the
    selected search's in artifacts/, a sweep's other searches' in artifacts/searches/<trial number>/."""
    artifacts, files = run_dir / "artifacts", []
    lrs = {meta.trial_number(r["trial_id"]): json.loads(r["hparams"]).get("lr")
           for r in rows if r["role"] == "search" and r["hparams"]}
    for history in sorted(artifacts.rglob("encodings.json")):
        folder, encodings = history.parent, json.loads(history.read_text())
        lr = (json.loads((folder / "hparams.json").read_text()).get("lr") if folder == artifacts
              else lrs.get(folder.name))
        files += plot_search(encodings["history"], encodings["labels"], folder, lr)
    return files
