"""Train one fixed (genotype, hyper-parameters) configuration as a Ray Tune function trainable.

    raysearch run configs/autohas_nb201_digits.yaml   # retrains the searched configuration

Tune config: {"experiment": <ExperimentConfig.to_dict()>, "genotype": str,
"lr": float, "weight_decay": float, "epochs": int}. A per-step learning-rate
list recorded by a search comes through `tune.with_parameters(train_trainable,
lr_schedule=[...])` (Ray's object store) instead of `lr`, so it is not copied
into every result. Retraining uses search-train + search-val and reports test
accuracy, which is never used for selection.
"""

from __future__ import annotations

import torch

from raysearch.config import from_dict
from raysearch.data import load_splits
from raysearch.retrain import TrainLoop
from raysearch.search import build_space
from raysearch.training import pick_device
from trainables.common import quiet_ray_logs, report, restore


def train_trainable(config: dict, lr_schedule: list[float] | None = None) -> None:
    quiet_ray_logs()
    # 1. typed objects from the Tune config
    cfg = from_dict(config["experiment"])
    splits = load_splits(cfg.data)
    space = build_space(cfg, splits)
    torch.manual_seed(cfg.seed)  # the network's initial weights
    loop = TrainLoop(space.network(space.parse(config["genotype"])), splits.train_and_val(), {"test": splits.test},
                     cfg.training, lr_schedule or config["lr"], config["weight_decay"], config["epochs"],
                     cfg.search.batch_size, cfg.seed, pick_device())
    # 2. resume from the last checkpoint
    restore(loop)
    # 3. epochs: train, evaluate, report with a checkpoint
    while loop.epoch < config["epochs"]:
        metrics = loop.run_epoch()
        report({**metrics, "epoch": loop.epoch}, loop.state_dict())
