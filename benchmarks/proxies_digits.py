"""Zero-cost proxies vs. short training on digits: how well each ranks NB201 cells.

    .venv/bin/python benchmarks/proxies_digits.py [--cells 50] [--epochs 10] [--channels 8] [--seed 0]

Samples `--cells` distinct NB201 cells (seeded), scores each untrained network with every proxy
in raysearch.proxies.PROXIES on one fixed search-train minibatch, then trains it for `--epochs`
(SGD, lr 0.1 cosine, weight decay 5e-4) and reads its search-val accuracy.
Prints one line per cell (val accuracy and scores), then per proxy: the Spearman rank
correlation of its scores with val accuracy over all cells, and its total scoring time.
On NB201/CIFAR the best proxies reach ~0.8 and #params is a strong competitor (ALGORITHMS.md);
a few epochs on digits is a much noisier target, so expect lower values.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysearch.config import DataConfig, TrainingConfig  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.proxies import PROXIES  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.spaces import NB201SpaceConfig, NB201Space  # noqa: E402
from raysearch.spaces.nb201 import EDGES, OP_NAMES, NB201Genotype  # noqa: E402


def sample_genotypes(n: int, seed: int) -> list[NB201Genotype]:
    """n distinct cells: distinct integers of [0, 5^6) read as base-5 digits, one per edge."""
    numbers = random.Random(seed).sample(range(len(OP_NAMES) ** len(EDGES)), n)
    return [NB201Genotype.from_indices([(k // len(OP_NAMES) ** e) % len(OP_NAMES) for e in range(len(EDGES))])
            for k in numbers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=50, help="number of distinct NB201 cells sampled")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per cell")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=2, help="as configs/autohas_nb201_digits.yaml")
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    splits = load_splits(DataConfig(val_fraction=0.25))
    space = NB201Space(NB201SpaceConfig(args.channels, args.cells_per_stage, args.stages), splits.shape)
    order = torch.randperm(len(splits.train[0]), generator=torch.Generator().manual_seed(args.seed))
    idx = order[: args.batch_size]
    x, y = splits.train[0][idx], splits.train[1][idx]  # the same minibatch for every cell
    print(f"{args.cells} cells, C={args.channels}, N={args.cells_per_stage}, {args.stages} stage(s), "
          f"{args.epochs} epochs, {torch.get_num_threads()} threads", flush=True)

    scores = {name: [] for name in PROXIES}
    seconds = dict.fromkeys(PROXIES, 0.0)
    accs = []
    for i, genotype in enumerate(sample_genotypes(args.cells, args.seed)):
        torch.manual_seed(args.seed)
        net = space.network(genotype)
        for name, proxy in PROXIES.items():
            start = time.perf_counter()
            scores[name].append(proxy(net, x, y))
            seconds[name] += time.perf_counter() - start
        loop = TrainLoop(net, splits.train, {"val": splits.val}, TrainingConfig(), lr=0.1, weight_decay=5e-4,
                         epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        for _ in range(args.epochs):
            metrics = loop.run_epoch()
        accs.append(metrics["val_acc"])
        shown = "  ".join(f"{name} {scores[name][-1]:.4g}" for name in PROXIES)
        print(f"[{i + 1:>3}/{args.cells}] val_acc {accs[-1]:.4f}  {genotype}  {shown}", flush=True)

    print(f"\n{'proxy':<11} {'spearman':>8} {'time (s)':>9}")
    for name in PROXIES:
        # -inf (a cell blind to its input) ranks last; ties (e.g. #params) get average ranks.
        rho = spearmanr(scores[name], accs).statistic
        print(f"{name:<11} {rho:>8.3f} {seconds[name]:>9.2f}")


if __name__ == "__main__":
    main()
