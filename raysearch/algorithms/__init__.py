"""Differentiable search algorithms: name -> (options dataclass, class)."""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.algorithms.autohas import AutoHAS, AutoHASConfig
from raysearch.algorithms.base import SearchAlgorithm, SearchResult
from raysearch.registry import Registry


@dataclass(frozen=True)
class AlgorithmEntry:
    config_type: type  # frozen dataclass of the algorithm's own options
    build: type  # SearchAlgorithm subclass: (space, options, training, total_steps, seed, device)


ALGORITHMS = Registry("algorithm", {
    "autohas": AlgorithmEntry(AutoHASConfig, AutoHAS),
})

__all__ = ["ALGORITHMS", "AlgorithmEntry", "SearchAlgorithm", "SearchResult"]
