"""Fixed networks as the product: built from a space config and a genotype (the found architecture, for
training it yourself)."""

from __future__ import annotations

from torch import nn

from raysearch.config import SPACE_OPTIONS, SpaceConfig
from raysearch.schema import build_named
from raysearch.shapes import DataShape
from raysearch.spaces import build_space


def space_config(space) -> SpaceConfig:
    """A SpaceConfig, from itself or from the space section as config.yaml and model.json hold it."""
    if isinstance(space, SpaceConfig):
        return space
    return build_named(SpaceConfig, "name", SPACE_OPTIONS, dict(space), "space")


def build_network(space, genotype, data: DataShape) -> nn.Module:
    """The fixed network of `genotype` with fresh weights (affine batch norm with running statistics), for
    training a found architecture yourself.

    `space`: a SpaceConfig, or the space section of a config or model card as a dict
    (`{"name": "nb201", "channels": 8, "cells_per_stage": 2, "stages": 1}`); `genotype`: a string in the
    space's format or a genotype value; `data`: the DataShape of the images (a card's `shape`).
    """
    searched = build_space(space_config(space), data)
    return searched.network(searched.parse(genotype) if isinstance(genotype, str) else genotype)
