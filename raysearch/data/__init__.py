"""Datasets, splits and batch streams (plain PyTorch)."""

from raysearch.data.datasets import DATASETS, DatasetNotFoundError, check_available, root_unset
from raysearch.data.splits import DataConfig, Splits, load_splits
from raysearch.data.stream import BatchStream, Halted

__all__ = ["DATASETS", "BatchStream", "DataConfig", "DatasetNotFoundError", "Halted", "Splits", "check_available", "load_splits", "root_unset"]
