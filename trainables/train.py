"""Train one fixed (architecture, hyper-parameters) configuration as a Ray Tune function trainable.

    raysearch run configs/random_nb201_digits.yaml   # a baseline: one trial per sampled configuration
    raysearch run configs/autohas_nb201_digits.yaml  # retrains the searched configuration

Tune config: the configuration as searchers sample it, one categorical per
architecture decision and the hyper-parameters (`{"edge_1_0": "nor_conv_3x3",
..., "lr": 0.05, "weight_decay": 3e-4}`, see raysearch.joint), optionally "optimizer" ("sgd", the
default, or "adam" as AutoHAS may derive), plus
  "epochs": the full training length (schedulers may stop or pause it earlier),
  "holdout": "val"  to train on search-train and report val_acc (for selection), or
             "test" to train on search-train + search-val and report test_acc (final numbers only),
             in mini-batches of `retrain.batch_size`, and optionally
  "seed": the seed of the initial weights and batch order (default: the experiment's).
With "val", a loss that becomes NaN/inf ends the trial with a last result
`{"val_acc": 0.0, "diverged": <reason>, "done": True}`: searchers learn that
the configuration is bad, and Tune does not retry it (it would diverge again).
The experiment (`ExperimentConfig.to_dict()`) and searches' per-step learning
rates (`lr_schedules`, by the name a trial's "lr" gives instead of a number)
come through `tune.with_parameters` (Ray's object store), so they are not
copied into every trial's config and results.
Reports once per epoch with a checkpoint, so a scheduler can stop, pause and resume the trial.
With "test", the last epoch's checkpoint also holds the trained network as a model folder's files
(raysearch.model: weights.pt and model.json, its latency measured here, on the trial's device).
"""

from __future__ import annotations

import functools

import torch
from ray import tune

from raysearch.config import from_dict
from raysearch.data import load_splits
from raysearch.model import hparams_of, make_card, model_files
from raysearch.retrain import TrainLoop
from raysearch.spaces import build_space
from raysearch.training import DIVERGED, DivergenceError, pick_device
from trainables.common import report, restore, set_up_trial

HOLDOUTS = ("val", "test")
# A reused trial actor keeps the splits of its previous trial: same data config, same tensors.
_splits = functools.lru_cache(maxsize=1)(load_splits)


def train_trainable(config: dict, experiment: dict, lr_schedules: dict[str, list[float]] | None = None) -> None:
    set_up_trial()
    # 1. typed objects from the Tune config
    if config["holdout"] not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {config['holdout']!r}")
    cfg = from_dict(experiment)
    splits = _splits(cfg.data)
    space = build_space(cfg.space, splits.shape)
    if config["holdout"] == "val":
        train, holdout, batch_size = splits.train, {"val": splits.val}, cfg.search.batch_size
    else:
        train, holdout, batch_size = splits.train_and_val(), {"test": splits.test}, cfg.retrain_batch_size
    lr = lr_schedules[config["lr"]] if isinstance(config["lr"], str) else config["lr"]
    seed = config.get("seed", cfg.seed)
    torch.manual_seed(seed)  # the network's initial weights: the same for every configuration
    genotype, optimizer = space.from_choices(config), config.get("optimizer", "sgd")
    loop = TrainLoop(space.network(genotype), train, holdout, cfg.training, lr, config["weight_decay"],
                     config["epochs"], batch_size, seed, pick_device(), optimizer)
    # 2. resume from the last checkpoint (after a failure, a pause or a restore)
    restore(loop)
    # 3. epochs: train, evaluate, report with a checkpoint
    while loop.epoch < config["epochs"]:
        try:
            metrics = loop.run_epoch()
        except DivergenceError as err:
            if config["holdout"] != "val":
                raise  # retraining the selected configuration: the run fails with this reason
            # In a sweep, a diverged configuration is a (bad) result, not a fault: Tune would retry it
            # from its checkpoint only to diverge again. The trial ends here, its reason reported.
            tune.report({"epoch": loop.epoch + 1, "val_acc": 0.0, DIVERGED: str(err), "done": True})
            return
        files = None
        if config["holdout"] == "test" and loop.epoch == config["epochs"]:  # the trained model: the product
            hparams = hparams_of(lr, config["weight_decay"], optimizer, config["epochs"])
            card = make_card(loop.net, cfg, splits.shape, genotype.to_string(), hparams, metrics["test_acc"], "retrain")
            files = model_files(loop.net, card)
        report({**metrics, "epoch": loop.epoch}, loop.state_dict(), files)


def choice_trainable(config: dict, experiment: dict, lr_schedules: dict[str, list[float]] | None = None) -> None:
    """One retraining of a grid over choices x seeds (`raysearch compare`): the Tune config is
    {"choice": {the configuration, as train_trainable takes it, and its "index"}, "seed", "epochs"}."""
    choice = {k: v for k, v in config["choice"].items() if k != "index"}
    train_trainable({**choice, "seed": config["seed"], "epochs": config["epochs"], "holdout": "test"}, experiment,
                    lr_schedules)
