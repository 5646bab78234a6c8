"""A comparison's files: comparison.parquet (one row per method x seed x budget point), the printed table
and the PNG plots, all rendered from the rows alone, so `raysearch report` reproduces them from the file."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

PARQUET = "comparison.parquet"
TABLE = "comparison.txt"
PLOTS = ("anytime.png", "final.png", "accuracy_vs_params.png")

SCHEMA = pa.schema([
    ("comparison", pa.string()),  # the comparison's name
    ("method", pa.string()),  # the method's name in the comparison config
    ("algorithm", pa.string()),  # its search.algorithm
    ("seed_index", pa.int64()),  # i: paired across methods
    ("seed", pa.int64()),  # the search seed of seed index i
    ("budget_fraction", pa.float64()),  # the budget point, a fraction of the budget (1: the end)
    ("budget_seconds", pa.float64()),  # the budget point in seconds
    ("used_seconds", pa.float64()),  # seconds of search behind the choice (at the end: the whole phase)
    ("trial_epochs", pa.int64()),  # trial-epochs spent by then (a differentiable search: its supernet epochs)
    ("genotype", pa.string()),  # the choice at that point
    ("hparams", pa.string()),  # its hyper-parameters, JSON
    ("val_accuracy", pa.float64()),  # search-val accuracy behind the choice
    ("test_mean", pa.float64()),  # test accuracy, mean over the k retrainings
    ("test_std", pa.float64()),  # and its std (0 for k = 1)
    ("test_accuracies", pa.list_(pa.float64())),  # each retraining's test accuracy, by retraining seed
    ("params", pa.int64()),  # trainable parameters of the chosen network
    ("flops", pa.float64()),  # its multiply-accumulates per image
    ("search_seconds", pa.float64()),  # wall seconds of the whole search phase of this method x seed
    ("retrain_seconds", pa.float64()),  # mean wall seconds of one retraining of the choice
    ("status", pa.string()),  # stopped at budget | finished early | no choice yet | failed: <reason>
])


def write_rows(rows: list[dict], run_dir: Path) -> Path:
    path = Path(run_dir) / PARQUET
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    pq.write_table(table, path)
    return path


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / PARQUET
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {PARQUET} (not a comparison, or it has not finished a method)")
    return pq.read_table(path).to_pylist()


def final_tests(rows: list[dict]) -> dict[str, dict[int, float | None]]:
    """method -> seed index -> test mean at the end of the budget (None: failed), methods in row order."""
    out: dict[str, dict[int, float | None]] = {}
    for r in rows:
        if r["budget_fraction"] == 1.0:
            out.setdefault(r["method"], {})[r["seed_index"]] = r.get("test_mean")
    return out


def _ranks(final: dict[str, dict[int, float | None]]) -> dict[str, float]:
    """Average rank over seed indices (1 = best; ties share the mean rank; a failed run ranks last)."""
    seeds = sorted({i for per in final.values() for i in per})
    ranks = {m: [] for m in final}
    for i in seeds:
        scores = {m: (per.get(i) if per.get(i) is not None else -math.inf) for m, per in final.items()}
        for m, score in scores.items():
            better = sum(s > score for s in scores.values())
            ties = sum(s == score for s in scores.values())
            ranks[m].append(better + (ties + 1) / 2)
    return {m: statistics.mean(r) for m, r in ranks.items()}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {std:.4f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def table(rows: list[dict]) -> str:
    """The comparison table: per method the end-of-budget test accuracy (mean +- std over seeds), its
    average rank over the paired seeds, cost and how the runs ended; then the wins of each pair."""
    final = final_tests(rows)
    ranks = _ranks(final)
    ends = [r for r in rows if r["budget_fraction"] == 1.0]
    budget = ends[0]["budget_seconds"]
    k = max((len(r.get("test_accuracies") or []) for r in ends), default=0)
    seeds = sorted({r["seed_index"] for r in ends})
    lines = [f"comparison {ends[0]['comparison']}: {len(final)} methods x {len(seeds)} seeds, {budget:g} s of search "
             f"each, every choice retrained {k}x; test accuracy at the end of the budget", ""]
    body = [["method", "algorithm", "test (mean +- std)", "avg rank", "search s", "trial-epochs", "runs"]]
    for method, per in final.items():
        mine = [r for r in ends if r["method"] == method]
        statuses: dict[str, int] = {}
        for r in mine:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        body.append([method, mine[0]["algorithm"], _mean_std([v for v in per.values() if v is not None]),
                     f"{ranks[method]:.2f}", f"{statistics.mean(r['search_seconds'] for r in mine):.1f}",
                     f"{statistics.mean(r.get('trial_epochs') or 0 for r in mine):.1f}",
                     ", ".join(f"{n} {s}" for s, n in statuses.items())])
    lines += _aligned(body)
    methods = list(final)
    lines += ["", f"wins per pair (row beats column on how many of the {len(seeds)} paired seeds):"]
    grid = [["", *methods]]
    for a in methods:
        grid.append([a, *("-" if a == b else str(sum(
            final[a].get(i) is not None and (final[b].get(i) is None or final[a][i] > final[b][i]) for i in seeds))
            for b in methods)])
    lines += _aligned(grid)
    return "\n".join(lines)


def _by_method(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r)
    return out


def _save(fig, ax, xlabel: str, path: Path) -> Path:
    """A line or scatter plot of test accuracy with one legend entry per method, written to `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (retrained; a final-model search: as trained)")
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, bottom=0.13, right=0.97, top=0.96)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_anytime(rows: list[dict], path: Path) -> Path:
    """Test accuracy of each method's choice at every budget point: the mean over seeds, and their range."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, mine in _by_method(rows).items():
        points = sorted({r["budget_seconds"] for r in mine})
        stats = []
        for p in points:
            values = [r.get("test_mean") for r in mine if r["budget_seconds"] == p and r.get("test_mean") is not None]
            if values:
                stats.append((p, statistics.mean(values), min(values), max(values)))
        if not stats:
            continue
        xs, means, lows, highs = zip(*stats)
        line, = ax.plot(xs, means, marker="o", label=method)
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
    return _save(fig, ax, "search budget spent (s)", path)


def plot_final(rows: list[dict], path: Path) -> Path:
    """End-of-budget test accuracy per method: one point per seed, and the mean as a bar."""
    final = final_tests(rows)
    width = max(4.0, 0.8 * len(final) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 4.0))
    for x, (method, per) in enumerate(final.items()):
        values = [v for v in per.values() if v is not None]
        ax.scatter([x] * len(values), values, s=18, zorder=3)
        if values:
            ax.hlines(statistics.mean(values), x - 0.3, x + 0.3, color="black")
    ax.set_xticks(range(len(final)), list(final), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (retrained; a final-model search: as trained)")
    fig.subplots_adjust(left=0.8 / width, bottom=0.25, right=0.97, top=0.96)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_params(rows: list[dict], path: Path) -> Path:
    """Test accuracy against the chosen network's parameters, every budget point, one colour per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, mine in _by_method(rows).items():
        done = [r for r in mine if r.get("test_mean") is not None and r.get("params")]
        ax.scatter([r.get("params") for r in done], [r.get("test_mean") for r in done], s=16, label=method)
    ax.set_xscale("log")
    return _save(fig, ax, "parameters", path)


def render(run_dir: Path) -> tuple[str, list[Path]]:
    """The table (also written as comparison.txt) and the plots of a comparison, from its Parquet file."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    text = table(rows)
    (run_dir / TABLE).write_text(text + "\n")
    plots = [fn(rows, run_dir / name) for fn, name in zip((plot_anytime, plot_final, plot_params), PLOTS)]
    return text, [run_dir / TABLE, *plots]

