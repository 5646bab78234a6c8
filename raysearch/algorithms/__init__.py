"""Differentiable search algorithms: name -> (options dataclass, class)."""

from __future__ import annotations

from raysearch.algorithms.base import SearchAlgorithm, SearchResult
from raysearch.algorithms.dha import DHA, DHAConfig
from raysearch.algorithms.sequential_dha import SequentialDHA, SequentialDHAConfig
from raysearch.algorithms.table import ARCHITECTURE_SEARCHES, AlgorithmEntry
from raysearch.registry import Registry

ALGORITHMS = Registry("algorithm", {
    **ARCHITECTURE_SEARCHES,  # each selects an architecture (and HPs) for retraining
    "dha": AlgorithmEntry(DHAConfig, DHA),  # these two train the model that is the result
    "sequential_dha": AlgorithmEntry(SequentialDHAConfig, SequentialDHA),
})

__all__ = ["ALGORITHMS", "AlgorithmEntry", "SearchAlgorithm", "SearchResult"]
