"""The discretisation gap of each shipped digits search: the supernet's search-val accuracy at its last
step, and the derived architecture's on the supernet's weights (the README's table).

    .venv/bin/python benchmarks/discretisation_gap.py [CONFIG_NAME ...]

Each config (default: every single-search digits config in configs/) runs in a plain loop, one process and
one thread, seed 0; prints both accuracies, the wall time and the derived genotype.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysearch.algorithms import ALGORITHMS  # noqa: E402
from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    names = sys.argv[1:] or [p.stem for p in sorted((ROOT / "configs").glob("*_digits.yaml")) if not p.stem.startswith("compare_")
                             if not p.stem.startswith("sweep_")]
    for name in names:
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        if config.search.algorithm not in ALGORITHMS:
            continue  # a black-box baseline derives nothing from a supernet
        loop = SearchLoop.from_config(config, load_splits(config.data))
        started = time.perf_counter()
        while not loop.done:
            metrics = loop.run_epoch()
        print(f"{name:34} supernet val {metrics.get('val_acc', float('nan')):.3f}  derived "
              f"{metrics['derived_val_acc']:.2f}  ({time.perf_counter() - started:.0f} s, {loop.epoch} epochs)  "
              f"{loop.algorithm.derive().genotype.to_string()}", flush=True)


if __name__ == "__main__":
    main()
