"""Result files of a run: summary.json, results.parquet (one row per trial) and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


@dataclass(frozen=True)
class Summary:
    """What one experiment found and what it cost; written as summary.json."""

    experiment: str  # experiment name
    algorithm: str  # search algorithm
    space: str  # search space
    dataset: str  # dataset name
    genotype: str  # derived architecture in the space's string format
    hparams: dict  # derived hyper-parameters (lr: per-step list, weight_decay, ...)
    search_seconds: float  # wall time of the search trial
    retrain_seconds: float | None  # wall time of the retraining trial (None if disabled)
    val_accuracy: float  # search-val accuracy of the derived architecture in the supernet
    test_accuracy: float | None  # test accuracy after retraining, or of a final-model search's model (else None)
    mlflow_experiment_id: str | None  # None when tracking was unavailable
    mlflow_parent_run_id: str | None
    run_dir: str = ""  # where every file of the run is
    extra: dict = field(default_factory=dict)  # tracking URI and other pointers
    model: dict | None = None  # the trained network: path, mlflow_uri, registered_version, params, flops, latency

    @property
    def model_rows(self) -> list[tuple[str, str]]:
        """The table's lines on the model: what it costs, where it is (labels no wider than the table's
        others, so its column keeps its width)."""
        m = self.model
        if m is None:
            return [("model", "none (no retraining, or it stopped before its last epoch)")]
        latency = m["latency"] or {}
        rows = [("model params / MACs", f"{m['params']:,} / {m['flops']:,.0f}"),
                ("latency (batch 1 / 64)", f"{latency.get('batch_1_ms', float('nan')):.3g} / "
                                           f"{latency.get('batch_64_ms', float('nan')):.3g} ms on "
                                           f"{latency.get('device', '-')}")]
        if m.get("mlflow_uri"):
            registered = f" (registered version {m['registered_version']})" if m.get("registered_version") else ""
            rows.append(("MLflow model", m["mlflow_uri"] + registered))
        return rows + [("model", m["path"])]

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """The end-of-run summary as aligned text."""
        lr = self.hparams.get("lr")
        if isinstance(lr, list) and lr:
            lr_text = f"{lr[0]:.4g} -> {lr[-1]:.4g} over {len(lr)} steps"  # a search's per-step list
        else:
            lr_text = f"{lr:.4g}" if isinstance(lr, float) else str(lr)
        rows = [
            ("experiment", self.experiment), ("algorithm / space", f"{self.algorithm} / {self.space}"),
            ("dataset", self.dataset), ("genotype", self.genotype), ("learning rate", lr_text),
            ("weight decay", f"{self.hparams.get('weight_decay', float('nan')):.4g}"),
            ("val accuracy (search)", f"{self.val_accuracy:.4f}"),
            (f"test accuracy ({'searched model' if 'test_accuracy' in self.extra else 'retrained'})",
             "-" if self.test_accuracy is None else f"{self.test_accuracy:.4f}"),
            ("search / retrain seconds",
             f"{self.search_seconds:.1f} / {'-' if self.retrain_seconds is None else f'{self.retrain_seconds:.1f}'}"),
            ("MLflow experiment / run", f"{self.mlflow_experiment_id or '-'} / {self.mlflow_parent_run_id or '-'}"),
            ("run directory", self.run_dir),
        ]
        if "trials" in self.extra:  # a sweep: its size, and for a meta-sweep the selected search's values
            rows.insert(-2, ("trials (failed)", f"{self.extra['trials']} ({self.extra.get('failed_trials', 0)})"))
        if "best_params" in self.extra:
            rows.insert(-2, ("best search's meta-HPs", "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.extra["best_params"].items())))
        rows += self.model_rows  # last: `make demo` ends with where the model is
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def write_summary(summary: Summary, run_dir: Path) -> Path:
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(summary.to_dict(), indent=2))
    return path


RESULT_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("role", pa.string()), ("trial_id", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("epochs", pa.int64()), ("seconds", pa.float64()), ("genotype", pa.string()),
    ("val_accuracy", pa.float64()), ("test_accuracy", pa.float64()), ("metrics", pa.string()),
    ("config", pa.string()), ("hparams", pa.string()),
])


def write_results(rows: list[dict], run_dir: Path) -> Path:
    """results.parquet: one row per trial with the columns of RESULT_SCHEMA (`metrics`, `config` and
    `hparams`, the derived hyper-parameters with a search's per-step lr list, are JSON text)."""
    path = Path(run_dir) / "results.parquet"
    table = pa.Table.from_pylist([{name: row.get(name) for name in RESULT_SCHEMA.names} for row in rows],
                                 schema=RESULT_SCHEMA)
    pq.write_table(table, path)
    return path


def plot_encodings(history: list[dict], labels: dict[str, tuple], path: Path) -> Path:
    """Probabilities of every encoding after each epoch: one panel per row of each encoding.

    `labels` maps an encoding name to (row names, or None for a vector, and its choice names).
    A sweep writes one per search on the driver, so the layout is fixed (no tight_layout) and each
    encoding's rows, which share their choices, share the legend of its first panel: ~2x cheaper.
    """
    panels = []  # (title, [probabilities per epoch], choice names, whether the panel carries the legend)
    for name, (rows, choices) in labels.items():
        series = [epoch[name] for epoch in history]
        if rows is None:
            panels.append((name, series, choices, True))
        else:
            panels += [(f"{name} {row}", [probs[r] for probs in series], choices, r == 0)
                       for r, row in enumerate(rows)]
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    fig.subplots_adjust(left=0.06 if cols > 1 else 0.15, right=0.98, top=1 - 0.3 / nrows, bottom=0.45 / nrows,
                        wspace=0.25, hspace=0.75)
    for ax, (title, series, choices, legend) in zip(axes.ravel(), panels):
        epochs = range(1, len(series) + 1)
        for c, choice in enumerate(choices):
            ax.plot(epochs, [probs[c] for probs in series], label=str(choice))
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if legend:
            ax.legend(fontsize=6)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def search_files(derived: dict, folder: Path) -> list[Path]:
    """encodings.json (probabilities of every encoding after every epoch; `raysearch report` redraws from
    it) and the search's plots, of a search's derived.json, written in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    history = folder / "encodings.json"
    history.write_text(json.dumps({"labels": derived["labels"], "history": derived["history"]}))
    return [history, *plot_search(derived["history"], derived["labels"], folder, derived["hparams"].get("lr"))]


def plot_search(history: list[dict], labels: dict[str, tuple], folder: Path, lr=None) -> list[Path]:
    """A search's plots in `folder`: encodings.png, augmentation_policy.png for an encoding whose choices
    are the ordered pairs `a+b` of n ops (DHA's policy: heat maps, not n^2 lines), and lr_schedule.png for
    a derived per-step `lr` list (AutoHAS)."""
    labels, files = dict(labels), []
    for name, (rows, choices) in list(labels.items()):
        ops = list(dict.fromkeys(str(c).split("+")[0] for c in choices))
        if rows is None and all("+" in str(c) for c in choices) and len(choices) == len(ops) ** 2:
            del labels[name]
            epochs = [(i, epoch[name]) for i, epoch in enumerate(history) if name in epoch]  # from when it exists
            files.append(plot_pair_policy(epochs, ops, folder / f"{name}_policy.png"))
    if labels:
        files.append(plot_encodings(history, labels, folder / "encodings.png"))
    if isinstance(lr, list):
        files.append(plot_lr(lr, folder / "lr_schedule.png"))
    return files


def plot_pair_policy(history: list[tuple[int, list[float]]], ops: list[str], path: Path, panels: int = 12) -> Path:
    """An augmentation pair policy (DHA: probabilities of the ops x ops ordered pairs, row-major) as one
    heat map per epoch (rows: first op, columns: second op), at most `panels` of the (epoch index,
    probabilities) in `history`, evenly spaced."""
    n = len(ops)
    picked = sorted({round(i * (len(history) - 1) / max(panels - 1, 1)) for i in range(min(panels, len(history)))})
    cols = min(4, len(picked))
    nrows = -(-len(picked) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    fig.subplots_adjust(wspace=0.6, hspace=0.6)
    low, top = min(min(p) for _, p in history), max(max(p) for _, p in history)
    for ax, k in zip(axes.ravel(), picked):
        epoch, probs = history[k]
        image = ax.imshow([probs[r * n:(r + 1) * n] for r in range(n)], vmin=low, vmax=top, cmap="viridis")
        ax.set_title(f"epoch {epoch + 1}", fontsize=9)
        ax.set_xticks(range(n), ops, rotation=90, fontsize=5)
        ax.set_yticks(range(n), ops, fontsize=5)
    for ax in axes.ravel()[len(picked):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_lr(lrs: list[float], path: Path) -> Path:
    """The derived per-step learning rate that retraining replays."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(lrs)), lrs)
    ax.set_xlabel("search step")
    ax.set_ylabel("derived learning rate")
    fig.subplots_adjust(left=0.18, bottom=0.17, right=0.97, top=0.95)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), each cell's count written in it."""
    n = len(classes)
    side = min(2.0 + 0.45 * n, 14.0)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    if n <= 30:  # beyond, the numbers would not fit their cells
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > top / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
