"""Shared fixtures: small configs, digits splits, and an isolated Ray per test that needs one."""

from __future__ import annotations

import pytest
import torch

from raysearch.config import DataConfig, from_dict
from raysearch.data import load_splits

torch.set_num_threads(2)

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "digits", "val_fraction": 0.25},
    "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "stages": 1},
    "search": {"algorithm": "autohas", "epochs": 2, "batch_size": 64, "encoding_lr": 0.03},
    "retrain": {"epochs": 1},
}


def space_for(algorithm: str, section: dict | None = None) -> dict:
    """TINY's space section (or `section`) as `algorithm` needs it: DHA's ISTA codes need a batch norm after
    every op (`op_norm`, in the spaces that have it)."""
    section = dict(TINY["space"] if section is None else section)
    if algorithm == "dha" and section["name"] != "mbconv":
        section["op_norm"] = True
    return section


def tiny_config(**sections):
    """TINY with sections replaced/extended, e.g. tiny_config(search={"epochs": 3})."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return from_dict(data)


@pytest.fixture(scope="session")
def digits():
    return load_splits(DataConfig(val_fraction=0.25))


@pytest.fixture
def ray_session(tmp_path_factory):
    """A private local Ray for one test, shut down afterwards."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             _temp_dir=str(tmp_path_factory.mktemp("ray", numbered=True)))
    yield
    ray.shutdown()


# The smallest useful options of every space in raysearch.spaces.SPACES (contract tests run each).
TINY_SPACES = {
    "nb201": {"channels": 4, "cells_per_stage": 1, "stages": 1},
    "darts": {"channels": 4, "layers": 3, "stem_multiplier": 1},
    "mbconv": {"width_multiplier": 0.1, "depth_multiplier": 0.1},
}


def tiny_space(name: str, data=None, **options):
    from raysearch.spaces import SPACES

    entry = SPACES[name]
    return entry.build(entry.config_type(**{**TINY_SPACES[name], **options}), data)
