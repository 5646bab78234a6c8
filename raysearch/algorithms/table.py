"""The searches that select an architecture (and HPs) for retraining: name -> (options dataclass, class).

A leaf of the package, so that Sequential DHA can run any of them as its first stage; the full
registry (raysearch.algorithms.ALGORITHMS) adds the searches whose trained model is the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.algorithms.autohas import AutoHAS, AutoHASConfig
from raysearch.algorithms.darts import Darts, DartsConfig
from raysearch.algorithms.darts_es import DartsES, DartsESConfig
from raysearch.algorithms.drnas import DrNAS, DrNASConfig
from raysearch.algorithms.gdas import GDAS, GDASConfig
from raysearch.algorithms.sdarts_rs import SDartsRS, SDartsRSConfig
from raysearch.registry import Registry


@dataclass(frozen=True)
class AlgorithmEntry:
    config_type: type  # frozen dataclass of the algorithm's own options
    build: type  # SearchAlgorithm subclass: (space, options, training, total_steps, seed, device, steps_per_epoch)


ARCHITECTURE_SEARCHES = Registry("architecture search", {
    "autohas": AlgorithmEntry(AutoHASConfig, AutoHAS),
    "darts": AlgorithmEntry(DartsConfig, Darts),
    "darts_es": AlgorithmEntry(DartsESConfig, DartsES),
    "gdas": AlgorithmEntry(GDASConfig, GDAS),
    "drnas": AlgorithmEntry(DrNASConfig, DrNAS),
    "sdarts_rs": AlgorithmEntry(SDartsRSConfig, SDartsRS),
})
