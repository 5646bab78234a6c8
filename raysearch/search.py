"""The plain search loop: an algorithm, its two batch streams, epochs and checkpoints.

Trainables wrap this loop; tests and notebooks run it directly on CPU.
"""

from __future__ import annotations

import torch

from raysearch.algorithms import ALGORITHMS, SearchAlgorithm
from raysearch.algorithms.selection import selection_epochs
from raysearch.config import ExperimentConfig
from raysearch.data import BatchStream, Halted, Splits
from raysearch.distributed import LOCAL
from raysearch.spaces import build_space
from raysearch.spaces.fixed import CALIBRATION_IMAGES


def planned_epochs(config: ExperimentConfig) -> int:
    """Search epochs plus the epochs of the selection that follows them (early stopping may end sooner)."""
    options = config.search.options
    extra = selection_epochs(build_space(config.space), options) if hasattr(options, "selection") else 0
    return config.search.epochs + extra


def search_data(options, splits: Splits, batch_size: int) -> tuple[tuple, tuple]:
    """(train, val) a search steps on: search-train and search-val, or, for a search that trains its weights
    on all the training data (`train_data: all`, DHA as its authors run it), search-train + search-val and,
    for its hyper-steps, the last `hyper_fraction` of it, at least one batch (a slice of the training data,
    as the reference's)."""
    if getattr(options, "train_data", "search_train") == "search_train":
        return splits.train, splits.val
    x, y = splits.train_and_val()
    n = min(max(round(len(x) * options.hyper_fraction), batch_size), len(x))
    return (x, y), (x[-n:], y[-n:])


class SearchLoop:
    """Runs a search epoch by epoch, then its selection's epochs; its state is the algorithm's,
    the streams' and the epoch, the same on every rank of a sharded search (`dist`), where each rank
    steps on its slice of every global batch of `batch_size`."""

    def __init__(self, algorithm: SearchAlgorithm, splits: Splits, epochs: int, batch_size: int, seed: int,
                 device, dist=LOCAL, data: tuple | None = None):
        self.algorithm, self.splits, self.search_epochs, self.device = algorithm, splits, epochs, device
        self.dist = dist
        shard = (dist.rank, dist.world_size)
        # `data`: search_data's (train, val), when the caller has them already (it copies the training data)
        train, val = data or search_data(getattr(algorithm, "options", None), splits, batch_size)
        self.train = BatchStream(*train, batch_size, seed, shard)
        self.val = BatchStream(*val, batch_size, seed + 1, shard)
        self.epoch = 0
        self.history: list[dict[str, list]] = []  # encoding probabilities after each epoch
        self.model = None  # a final-model search's fixed network as of the last epoch (what it tested)
        self.config: ExperimentConfig | None = None  # the experiment, when built from one

    @classmethod
    def from_config(cls, config: ExperimentConfig, splits: Splits, device=torch.device("cpu"),
                    dist=LOCAL) -> "SearchLoop":
        search = config.search
        data = search_data(search.options, splits, search.batch_size)
        steps_per_epoch = len(data[0][0]) // search.batch_size
        algorithm = ALGORITHMS[search.algorithm].build(
            build_space(config.space, splits.shape), search.options, config.training,
            total_steps=search.epochs * steps_per_epoch, seed=config.seed, device=device,
            steps_per_epoch=steps_per_epoch, dist=dist,
        )
        loop = cls(algorithm, splits, search.epochs, search.batch_size, config.seed, device, dist, data)
        loop.config = config
        return loop

    @property
    def searching(self) -> bool:
        return self.epoch < self.search_epochs and not self.algorithm.stopped

    @property
    def done(self) -> bool:
        selection = self.algorithm.selection
        return not self.searching and (selection is None or selection.epochs_done >= selection.epochs)

    def run_epoch(self) -> dict[str, float]:
        """One search epoch (a pass over search-train) or one selection epoch; returns epoch means
        (over ranks too) plus full search-val metrics of the derived architecture."""
        if self.halted:
            raise Halted(f"halted before epoch {self.epoch + 1}")
        if self.searching:
            sums: dict[str, float] = {}
            for _ in range(self.train.batches_per_pass):
                for key, value in self.algorithm.step(next(self.train), next(self.val)).items():
                    sums[key] = sums.get(key, 0.0) + value
            metrics = {k: v / self.train.batches_per_pass for k, v in sums.items()}
            metrics.update(self.algorithm.end_epoch(next(self.val)))
        else:
            metrics = self.algorithm.selection.run_epoch(self.train, self.splits.val, self.val)
        metrics = self.dist.average_metrics(metrics)
        result = self.algorithm.derive()
        metrics.update({k: v for k, v in result.hparams.items() if isinstance(v, float)})
        metrics["derived_val_loss"], metrics["derived_val_acc"] = self.dist.evaluate(
            self.algorithm.derived_logits, *self.splits.val, self.device)
        if self.algorithm.final_model:  # the model is the result: its test accuracy, never used to choose
            # the fixed network, calibrated on (non-augmented) search-train images; before a Sequential DHA
            # has one, its first stage's supernet computing the derived cell
            self.model = self.algorithm.final_network(self.splits.train[0][:CALIBRATION_IMAGES])
            metrics["test_loss"], metrics["test_acc"] = self.dist.evaluate(
                self.algorithm.derived_logits if self.model is None else self.model, *self.splits.test, self.device)
        self.epoch += 1
        self.history.append({k: v.tolist() for k, v in self.algorithm.encodings().items()})
        return metrics

    def halt(self) -> None:
        """Stop the search from another thread: its current epoch raises `raysearch.data.Halted` at the
        next batch it draws (search and selection steps both draw from the training stream), the next
        epoch at its start (a selection's last round draws none)."""
        self.train.halt()
        self.val.halt()

    @property
    def halted(self) -> bool:
        return self.train.halted

    def state_dict(self) -> dict:
        return {"algorithm": self.algorithm.state_dict(), "train": self.train.state_dict(),
                "val": self.val.state_dict(), "epoch": self.epoch, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        self.train.load_state_dict(state["train"])
        self.val.load_state_dict(state["val"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
