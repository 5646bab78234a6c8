"""AutoHAS's two W' orders side by side: the default (W' from this step's gradient at W_t) and the paper's
Algorithm 1 (the step first, W' one step past it, one more training pass per step).

    .venv/bin/python benchmarks/autohas_w_prime.py [--seeds 3] [--retrain-epochs 20]

Runs configs/autohas_nb201_digits.yaml in a plain loop (one process, one thread) with each `search.w_prime`
and each seed, then retrains the derived cell with the derived per-step lr list and weight decay on
search-train + search-val. Prints per order: search seconds, the derived cell's search-val accuracy in the
supernet, the derived lr factor, the retrained test accuracy (means over seeds, and each seed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "autohas_nb201_digits.yaml"


def run(order: str, seed: int, retrain_epochs: int) -> dict:
    config = load_config(CONFIG, [f"search.w_prime={order}", f"seed={seed}"])
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    started = time.perf_counter()
    while not loop.done:
        metrics = loop.run_epoch()
    seconds = time.perf_counter() - started
    result = loop.algorithm.derive()
    torch.manual_seed(seed)
    train = TrainLoop(loop.algorithm.space.network(result.genotype), splits.train_and_val(), {"test": splits.test},
                      config.training, result.hparams["lr"], result.hparams["weight_decay"], retrain_epochs,
                      config.search.batch_size, seed)
    for _ in range(retrain_epochs):
        retrained = train.run_epoch()
    return {"seconds": seconds, "val": metrics["derived_val_acc"], "factor": result.hparams["lr_factor"],
            "test": retrained["test_acc"], "genotype": result.genotype.to_string()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'w_prime':8} {'search s':>9} {'derived val':>12} {'lr factor':>10} {'test':>7}   test per seed")
    for order in ("current", "updated"):
        runs = [run(order, seed, args.retrain_epochs) for seed in range(args.seeds)]
        mean = {k: statistics.mean(r[k] for r in runs) for k in ("seconds", "val", "factor", "test")}
        print(f"{order:8} {mean['seconds']:9.1f} {mean['val']:12.4f} {mean['factor']:10.3f} {mean['test']:7.4f}   "
              + " / ".join(f"{r['test']:.4f}" for r in runs), flush=True)


if __name__ == "__main__":
    main()
