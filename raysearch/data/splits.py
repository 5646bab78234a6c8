"""Fixed, seeded search-train / search-val / test splits, normalised by search-train."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import torch

from raysearch.data.datasets import DATASETS, RawData
from raysearch.schema import spec
from raysearch.shapes import DataShape


@dataclass(frozen=True)
class DataConfig:
    dataset: str = spec("digits", choices=DATASETS)  # name in raysearch.data.DATASETS
    root: str | None = None  # local directory with the dataset's files (digits needs none)
    val_fraction: float = spec(0.1, gt=0.0, lt=1.0)  # share of the search pool kept as search-val (CIFAR: 45k/5k)
    test_fraction: float = spec(0.2, gt=0.0, lt=1.0)  # share carved off as test when the dataset has no test set
    split_seed: int = spec(0, ge=0)  # seed of the fixed split (kept apart from the search seed)
    options: typing.Any = None  # the dataset's own options dataclass (null: its defaults), beside `dataset`


@dataclass(frozen=True)
class Splits:
    """The three disjoint splits; the test split is never used by a search."""

    train: tuple[torch.Tensor, torch.Tensor]  # search-train: weight updates
    val: tuple[torch.Tensor, torch.Tensor]  # search-val: encoding updates, model selection
    test: tuple[torch.Tensor, torch.Tensor]  # final evaluation only
    shape: DataShape

    def train_and_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Retraining data: search-train + search-val."""
        return torch.cat([self.train[0], self.val[0]]), torch.cat([self.train[1], self.val[1]])


def split(raw: RawData, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Carve test (only when the dataset has no official one), then val, off a seeded permutation."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(raw.x), generator=gen)
    x, y = raw.x[order], raw.y[order]
    if raw.test_x is None:
        n_test = round(len(x) * test_fraction)
        (test_x, test_y), x, y = (x[:n_test], y[:n_test]), x[n_test:], y[n_test:]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    n_val = round(len(x) * val_fraction)
    val, train = (x[:n_val], y[:n_val]), (x[n_val:], y[n_val:])
    # Per-channel statistics of search-train only, so nothing leaks from val/test.
    mean = train[0].mean(dim=(0, 2, 3), keepdim=True)
    std = train[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    norm = lambda t: (t - mean) / std  # noqa: E731
    # The shape carries the statistics, so that augmentation (DHA) can work on [0, 1] images.
    shape = dataclasses.replace(raw.shape, mean=tuple(mean.flatten().tolist()), std=tuple(std.flatten().tolist()))
    return Splits((norm(train[0]), train[1]), (norm(val[0]), val[1]), (norm(test_x), test_y), shape)


def load_splits(data: DataConfig) -> Splits:
    """The splits a `data:` config section describes."""
    entry = DATASETS[data.dataset]
    raw = entry.load(data.root, data.options or entry.config_type())
    return split(raw, data.val_fraction, data.test_fraction, data.split_seed)
