"""The README's configuration reference covers every field a config accepts."""

import dataclasses
from pathlib import Path

from raysearch.algorithms import ALGORITHMS
from raysearch.baselines import BASELINES
from raysearch.config import ExperimentConfig, SearchConfig, SpaceConfig
from raysearch.data import DATASETS
from raysearch.spaces import SPACES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        if f.name == "options":
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def test_every_config_field_is_in_the_readme():
    # space and search are built by name: their common fields, then every entry's own options
    names = [n for n in _fields(ExperimentConfig) if n not in ("space", "search")]
    names += [*_fields(SpaceConfig, "space."), *_fields(SearchConfig, "search.")]
    for entry in [*ALGORITHMS.values(), *BASELINES.values()]:
        names += [f"search.{f.name}" for f in dataclasses.fields(entry.config_type)]
    for entry in SPACES.values():
        names += [f"space.{f.name}" for f in dataclasses.fields(entry.config_type)]
    for entry in DATASETS.values():
        names += [f"data.{f.name}" for f in dataclasses.fields(entry.config_type)]
    assert {"search.epochs", "tracking.uri", "space.name", "space.layers"} <= set(names)
    missing = [n for n in names if f"`{n}`" not in README]
    assert not missing, f"document these config fields in README.md: {missing}"


def test_readme_has_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
