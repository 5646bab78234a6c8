"""One differentiable search as a Ray Tune function trainable.

    raysearch run configs/autohas_nb201_digits.yaml

Tune config: {"experiment": <ExperimentConfig.to_dict()>}. Reports once per
epoch with a checkpoint holding the whole search state (weights, encodings,
optimizer states, RNG states, step, stream positions) and `derived.json`,
the configuration the search selects at that point.
"""

from __future__ import annotations

from raysearch.config import from_dict
from raysearch.data import load_splits
from raysearch.search import SearchLoop
from raysearch.training import pick_device
from trainables.common import quiet_ray_logs, report, restore

DERIVED_FILE = "derived.json"


def search_trainable(config: dict) -> None:
    quiet_ray_logs()
    # 1. the Tune config becomes typed objects once, here at the boundary
    cfg = from_dict(config["experiment"])
    splits = load_splits(cfg.data)
    loop = SearchLoop.from_config(cfg, splits, pick_device())
    # 2. continue from the last checkpoint after a failure, pause or restore
    restore(loop)
    # 3. epochs (search, then selection): derive, report with a checkpoint
    while not loop.done:
        metrics = loop.run_epoch()
        result = loop.algorithm.derive()
        derived = {"genotype": result.genotype.to_string(), "hparams": result.hparams, "history": loop.history,
                   "labels": loop.algorithm.encoding_labels()}
        report({**metrics, "epoch": loop.epoch, "search_done": loop.done, "genotype": derived["genotype"]},
               loop.state_dict(),
               {DERIVED_FILE: derived})
