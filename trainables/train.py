"""Train one fixed (genotype, hyper-parameters) configuration as a Ray Tune function trainable.

    raysearch run configs/autohas_nb201_digits.yaml   # retrains the searched configuration

Tune config: {"experiment": <ExperimentConfig.to_dict()>, "genotype": str,
"lr": float or per-step list, "weight_decay": float, "epochs": int,
"train_on": "train" | "train+val"}. Training on search-train evaluates on
search-val each epoch (for model selection); training on train+val (retraining)
only reports test accuracy, which is never used for selection.
"""

from __future__ import annotations

import torch

from raysearch.config import from_dict
from raysearch.data import load_splits
from raysearch.retrain import TrainLoop
from raysearch.search import build_space
from raysearch.training import pick_device
from trainables.common import quiet_ray_logs, report, restore


def train_trainable(config: dict) -> None:
    quiet_ray_logs()
    # 1. typed objects from the Tune config
    cfg = from_dict(config["experiment"])
    d = cfg.data
    splits = load_splits(d.dataset, d.root, d.val_fraction, d.test_fraction, d.split_seed)
    space = build_space(cfg, splits)
    if config.get("train_on", "train+val") == "train":
        train_split, eval_splits = splits.train, {"val": splits.val, "test": splits.test}
    else:
        train_split, eval_splits = splits.train_and_val(), {"test": splits.test}
    torch.manual_seed(cfg.seed)  # the network's initial weights
    loop = TrainLoop(space.network(space.parse(config["genotype"])), train_split, eval_splits, cfg.training,
                     config["lr"], config["weight_decay"], config["epochs"], cfg.search.batch_size, cfg.seed,
                     pick_device())
    # 2. resume from the last checkpoint
    restore(loop)
    # 3. epochs: train, evaluate, report with a checkpoint
    while loop.epoch < config["epochs"]:
        metrics = loop.run_epoch()
        report({**metrics, "epoch": loop.epoch}, loop.state_dict())
