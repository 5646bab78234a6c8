"""What a network needs to know about its data: a leaf module, so that data and spaces share it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataShape:
    """What a network needs to know about its inputs and outputs."""

    in_channels: int  # image channels
    image_size: int  # height == width
    num_classes: int  # number of labels
    mean: tuple[float, ...] | None = None  # per-channel mean of search-train, which the splits subtracted
    std: tuple[float, ...] | None = None  # per-channel std of search-train, which the splits divided by
    classes: tuple[str, ...] | None = None  # the label names, indexed by label (None: "0", "1", ...)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes or tuple(str(k) for k in range(self.num_classes))
