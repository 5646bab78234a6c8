"""Search spaces: a registry of name -> space class.

A space turns a genotype into a fixed network, builds the supernet whose
architecture encoding has `encoding_shape`, reads genotypes from indices and
strings, and names its decisions as one categorical each (`choices()`), the
form black-box searchers sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.registry import Registry
from raysearch.spaces import nb201


@dataclass(frozen=True)
class DataShape:
    """What a network needs to know about its inputs and outputs."""

    in_channels: int  # image channels
    image_size: int  # height == width
    num_classes: int  # number of labels


class NB201Space:
    """NAS-Bench-201 cells in the NB201 macro skeleton."""

    name = "nb201"
    op_names = nb201.OP_NAMES
    edge_names = tuple(f"{dst}<-{src}" for dst, src in nb201.EDGES)
    encoding_shape = (len(nb201.EDGES), len(nb201.OP_NAMES))
    genotype_type = nb201.NB201Genotype

    def __init__(self, channels: int, cells_per_stage: int, stages: int, data: DataShape):
        self.channels, self.cells_per_stage, self.stages, self.data = channels, cells_per_stage, stages, data

    def _skeleton(self, candidates):
        return nb201.NB201Skeleton(self.channels, self.cells_per_stage, self.stages, self.data.in_channels,
                                   self.data.num_classes, tuple(candidates))

    def supernet(self) -> nb201.NB201Network:
        """All ops on every edge; non-affine cell BN, and batch statistics only (no running stats)."""
        skeleton = self._skeleton([self.op_names] * len(nb201.EDGES))
        return nb201.NB201Network(skeleton, cell_affine=False, track=False)

    def network(self, genotype: nb201.NB201Genotype) -> nb201.NB201Network:
        return nb201.NB201Network(self._skeleton([(op,) for op in genotype.ops]), cell_affine=True, track=True)

    def genotype(self, indices) -> nb201.NB201Genotype:
        return nb201.NB201Genotype.from_indices(indices)

    @classmethod
    def parse(cls, text: str) -> nb201.NB201Genotype:
        return nb201.NB201Genotype.from_string(text)

    # Keys are plain identifiers: they become Tune config keys, ConfigSpace names and MLflow params.
    choice_keys = tuple(f"edge_{dst}_{src}" for dst, src in nb201.EDGES)

    # Class methods: the decisions do not depend on widths or data, so a driver needs no dataset for them.
    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        """One categorical per architecture decision: the op of each edge."""
        return {key: cls.op_names for key in cls.choice_keys}

    @classmethod
    def from_choices(cls, values: dict) -> nb201.NB201Genotype:
        return nb201.NB201Genotype(tuple(str(values[key]) for key in cls.choice_keys))

    @classmethod
    def to_choices(cls, genotype: nb201.NB201Genotype) -> dict[str, str]:
        return dict(zip(cls.choice_keys, genotype.ops))


SPACES = Registry("space", {"nb201": NB201Space})
