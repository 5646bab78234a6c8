"""DARTS's drift toward parameter-free ops on NB201 over digits, and two remedies, side by side.

    .venv/bin/python benchmarks/collapse_digits.py [--epochs 50] [--retrain-epochs 30] [--retrain-seeds 3] [--seeds 0 1]

1. DARTS (first order) searches the NB201 cell; after every epoch the cell its
   encodings derive (argmax per edge) is printed with the share of its edges
   that are parameter-free (`skip_connect`, `avg_pool_3x3`, `none`).
2. From that same trained DARTS supernet, perturbation selection (DARTS-PT)
   derives a second cell; DrNAS searches a third from its own supernet, with
   the same skeleton, epochs and batches.
3. Each derived cell is retrained from scratch on search-train + search-val
   and tested, from `--retrain-seeds` initialisations (on digits one test
   image is 0.3%, about the spread between initialisations); the test
   accuracies print side by side (mean over retraining seeds, then seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysearch.algorithms.selection import Perturbation  # noqa: E402
from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402
from raysearch.spaces import build_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMETER_FREE = ("skip_connect", "avg_pool_3x3", "none")


def _share(genotype, ops) -> float:
    return sum(op in ops for op in genotype.ops) / len(genotype.ops)


def _search(algorithm: str, args, seed: int):
    config = load_config(ROOT / "configs" / f"{algorithm}_nb201_digits.yaml",
                         [f"search.epochs={args.epochs}", f"seed={seed}"])
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    history = []
    while not loop.done:
        metrics = loop.run_epoch()
        history.append((loop.algorithm.derive().genotype, metrics["derived_val_acc"]))
    return config, splits, loop, history


def _retrain(config, splits, genotype, args, seed: int) -> float:
    """Mean test accuracy of the cell over `args.retrain_seeds` retrainings (seed s: the same for every cell)."""
    space = build_space(config.space, splits.shape)
    accuracies = []
    for s in range(1000 * seed, 1000 * seed + args.retrain_seeds):
        torch.manual_seed(s)
        loop = TrainLoop(space.network(genotype), splits.train_and_val(), {"test": splits.test}, config.training,
                         config.training.lr, config.training.weight_decay, args.retrain_epochs,
                         config.search.batch_size, s)
        for _ in range(args.retrain_epochs):
            metrics = loop.run_epoch()
        accuracies.append(metrics["test_acc"])
    return statistics.mean(accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50, help="search epochs (DARTS's default: 50)")
    parser.add_argument("--retrain-epochs", type=int, default=30)
    parser.add_argument("--retrain-seeds", type=int, default=3, help="retrainings per derived cell")
    parser.add_argument("--tune-epochs", type=int, default=2, help="perturbation: tuning epochs per decision")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    results = {"darts (magnitude)": [], "darts + perturbation": [], "drnas (magnitude)": []}
    shares = {name: [] for name in results}
    for seed in args.seeds:
        started = time.monotonic()
        config, splits, loop, history = _search("darts", args, seed)
        print(f"seed {seed}: DARTS, derived cell after each epoch (parameter-free share = skip/pool/none edges)")
        print(f"{'epoch':>5} {'free':>5} {'skip':>5} {'pool':>5} {'val acc':>8}  cell")
        for epoch, (genotype, val) in enumerate(history, start=1):
            print(f"{epoch:>5} {_share(genotype, PARAMETER_FREE):>5.2f} {_share(genotype, ('skip_connect',)):>5.2f} "
                  f"{_share(genotype, ('avg_pool_3x3',)):>5.2f} {val:>8.4f}  {genotype}", flush=True)
        cells = {"darts (magnitude)": history[-1][0]}
        # perturbation selection from the same trained supernet
        loop.algorithm.selection = Perturbation(loop.algorithm, args.tune_epochs, 0.1, seed)
        while not loop.done:
            loop.run_epoch()
        cells["darts + perturbation"] = loop.algorithm.derive().genotype
        cells["drnas (magnitude)"] = _search("drnas", args, seed)[3][-1][0]
        print(f"searches took {time.monotonic() - started:.0f} s; retraining each cell for {args.retrain_epochs} "
              "epochs", flush=True)
        for name, genotype in cells.items():
            results[name].append(_retrain(config, splits, genotype, args, seed))
            shares[name].append(_share(genotype, PARAMETER_FREE))
            print(f"  {name:<22} test {results[name][-1]:.4f}  free {shares[name][-1]:.2f}  {genotype}", flush=True)

    print(f"\nderived cells retrained ({len(args.seeds)} seed(s), {args.epochs} search epochs, "
          f"{args.retrain_epochs} retraining epochs x {args.retrain_seeds} initialisations)")
    print(f"{'selection':<22} {'test acc':>9} {'param-free share':>17}")
    for name in results:
        print(f"{name:<22} {statistics.mean(results[name]):>9.4f} {statistics.mean(shares[name]):>17.2f}")


if __name__ == "__main__":
    main()
