"""Cost of one search step of every algorithm, relative to one training step of the derived network.

    .venv/bin/python benchmarks/supernet_step.py [--spaces nb201 darts mbconv] [--steps 20] [--batch 64]

For each space and each algorithm in the registry: the median wall time of a
search step (weights and encodings, on a training and a validation batch) and
its memory, each divided by the same for one SGD step of the network the
algorithm derives, on the same training batch, measured side by side in one run
(absolute times on shared machines are noisy). Memory is the peak allocated
on a GPU; on the CPU, where torch keeps no allocator statistics, it is the
bytes autograd saves for backward (activations), the part that grows with
the supernet.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysearch.algorithms import ALGORITHMS  # noqa: E402
from raysearch.config import DataConfig, TrainingConfig  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.memory import saved_tensor_bytes  # noqa: E402
from raysearch.spaces import SPACES  # noqa: E402
from raysearch.training import pick_device  # noqa: E402

# Digits-sized skeletons (the shipped configs).
SPACE_OPTIONS = {"nb201": {"channels": 8, "cells_per_stage": 2, "stages": 1},
                 "darts": {"channels": 8, "layers": 5},
                 "mbconv": {"width_multiplier": 0.3, "depth_multiplier": 0.3}}

# Registry entries with options that change the step's cost, measured as extra rows.
VARIANTS = {"darts-2nd": ("darts", {"order": 2})}


def _measure(step, batches, device) -> tuple[float, int]:
    """(median seconds, memory bytes) of `step(batch_pair)` over `batches` after a warm-up."""
    for pair in batches[:3]:
        step(pair)
    times = []
    for pair in batches[3:]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step(pair)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(batches[0])
        memory = torch.cuda.max_memory_allocated() - base
    else:
        memory = saved_tensor_bytes(lambda: step(batches[0]))
    return statistics.median(times), memory


def _derived_step(network, device):
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)

    def step(pair):
        x, y = (t.to(device) for t in pair[0])
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(network(x), y).backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=sorted(SPACE_OPTIONS), choices=sorted(SPACE_OPTIONS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    device = pick_device()
    splits = load_splits(DataConfig(val_fraction=0.5))
    gen = torch.Generator().manual_seed(0)

    def batch(split):
        index = torch.randint(0, len(split[0]), (args.batch,), generator=gen)
        return split[0][index], split[1][index]

    batches = [(batch(splits.train), batch(splits.val)) for _ in range(args.steps + 3)]
    print(f"device {device}; memory = {'peak allocated' if device.type == 'cuda' else 'saved activations'}")
    print(f"{'space':<7} {'algorithm':<10} {'step ms':>8} {'x derived':>9} {'memory MB':>10} {'x derived':>9}")
    for space_name in args.spaces:
        entry = SPACES[space_name]
        space = entry.build(entry.config_type(**SPACE_OPTIONS[space_name]), splits.shape)
        runs = {**{name: (name, {}) for name in sorted(ALGORITHMS)}, **VARIANTS}
        for name, (registered, options) in runs.items():
            algorithm = ALGORITHMS[registered]
            algo = algorithm.build(space, algorithm.config_type(**options), TrainingConfig(), total_steps=10**4,
                                   seed=0, device=device, steps_per_epoch=100)
            search_time, search_memory = _measure(lambda pair: algo.step(*pair), batches, device)
            torch.manual_seed(0)
            network = space.network(algo.derive().genotype).to(device)
            train_time, train_memory = _measure(_derived_step(network, device), batches, device)
            print(f"{space_name:<7} {name:<10} {1000 * search_time:>8.1f} {search_time / train_time:>9.2f} "
                  f"{search_memory / 2**20:>10.2f} {search_memory / max(train_memory, 1):>9.2f}", flush=True)


if __name__ == "__main__":
    main()
