"""The interface every search space implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from raysearch.shapes import DataShape


class GenotypeError(ValueError):
    """A genotype string or value that does not describe an architecture of the space."""


class Space(ABC):
    """A search space: its encodings, supernet, fixed networks and genotype formats.

    Built from the space's options dataclass; `data` is needed only to build
    networks, so drivers that only sample or parse configurations pass none.

    Supernets take `forward(x, weights, active=None)`: `weights` maps each
    encoding name to its [rows, ops] mixing weights; `active` (hard sampling)
    maps each name to the one op computed per row; `edges()` yields (encoding
    name, row, candidate ops) of every mixed edge. Fixed networks take `x` only.
    """

    name: str
    excluded_ops: tuple[str, ...] = ()  # ops the derivation never selects (DARTS: none)

    def __init__(self, options, data: DataShape | None = None):
        self.options, self._data = options, data

    @property
    def data(self) -> DataShape:
        if self._data is None:
            raise ValueError(f"the {self.name} space was built without a data shape; pass one to build networks")
        return self._data

    @property
    @abstractmethod
    def encodings(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Per architecture encoding: (row names, op names); its shape is [rows, ops]."""

    def encoding_shapes(self) -> dict[str, tuple[int, int]]:
        return {name: (len(rows), len(ops)) for name, (rows, ops) in self.encodings.items()}

    @abstractmethod
    def supernet(self, partial: int = 1, affine: bool = False) -> nn.Module:
        """Every candidate op on every row; BN with batch statistics only, non-affine unless `affine` (a
        supernet that is itself the final model, DHA's). `partial` k > 1 passes 1/k of each edge's
        channels through its ops (PC-DARTS; cell spaces only)."""

    @abstractmethod
    def network(self, genotype) -> nn.Module:
        """The fixed network of a genotype, with affine BN and running statistics."""

    @abstractmethod
    def derive(self, weights: dict[str, torch.Tensor]):
        """The genotype the space's derivation rule reads off mixing weights (magnitude selection)."""

    @abstractmethod
    def parse(self, text: str):
        """The genotype of a string in the space's own format (never evaluated as code)."""

    @abstractmethod
    def choices(self) -> dict[str, tuple[str, ...]]:
        """One categorical per architecture decision, keyed by plain identifiers (Tune/ConfigSpace names)."""

    @abstractmethod
    def from_choices(self, values: dict): ...

    @abstractmethod
    def to_choices(self, genotype) -> dict[str, str]: ...

    def node_groups(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(encoding, rows of a node's incoming edges, how many the node keeps): fewer than its rows where
        the derivation also picks a topology (DARTS), all of them in NB201; empty for spaces without nodes
        (MBConv)."""
        return []

    @abstractmethod
    def derived_weights(self, genotype) -> dict[str, torch.Tensor]:
        """Mixing weights under which the supernet computes exactly `genotype`: one-hot rows, and zero
        rows for the inputs a cell does not use."""


def one_hot_rows(op_names, chosen) -> torch.Tensor:
    """[rows, ops] one-hot weights; a None entry in `chosen` leaves its row zero."""
    weights = torch.zeros(len(chosen), len(op_names))
    for row, op in enumerate(chosen):
        if op is not None:
            weights[row, op_names.index(op)] = 1.0
    return weights
