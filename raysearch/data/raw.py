"""What every dataset loader returns, and the error for a dataset whose files are missing: a leaf module,
so that the loaders in their own modules share it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysearch.shapes import DataShape


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says where and how to get them."""


@dataclass(frozen=True)
class RawData:
    """Images as float tensors [N, C, H, W] in [0, 1], labels as int64."""

    x: torch.Tensor  # images available for search (train pool)
    y: torch.Tensor
    test_x: torch.Tensor | None  # official test set, or None to carve one out
    test_y: torch.Tensor | None
    shape: DataShape
