"""Search spaces: a registry of name -> (options dataclass, space class).

A space names its architecture encodings, builds the supernet that mixes
them and the fixed network of a genotype, derives genotypes from mixing
weights, reads genotype strings, and names its decisions as one categorical
each (`choices()`), the form black-box searchers sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.registry import Registry
from raysearch.spaces.base import DataShape, GenotypeError, Space
from raysearch.spaces.darts import DartsSpaceConfig, DartsGenotype, DartsSpace
from raysearch.spaces.mbconv import MBConvSpaceConfig, MBConvGenotype, MBConvSpace
from raysearch.spaces.nb201 import NB201SpaceConfig, NB201Genotype, NB201Space


@dataclass(frozen=True)
class SpaceEntry:
    config_type: type  # frozen dataclass of the space's own options
    build: type  # Space subclass: (options, data shape or None)


SPACES = Registry("space", {
    "nb201": SpaceEntry(NB201SpaceConfig, NB201Space),
    "darts": SpaceEntry(DartsSpaceConfig, DartsSpace),
    "mbconv": SpaceEntry(MBConvSpaceConfig, MBConvSpace),
})


def build_space(config, data: DataShape | None = None) -> Space:
    """The space of a `SpaceConfig`; `data` is needed only to build networks."""
    return SPACES[config.name].build(config.options, data)


__all__ = ["SPACES", "DataShape", "GenotypeError", "Space", "build_space", "DartsGenotype", "MBConvGenotype",
           "NB201Genotype", "DartsSpaceConfig", "MBConvSpaceConfig", "NB201SpaceConfig"]
