"""The op table's avg_pool_3x3 (a box convolution over the in-bounds count) against torch's pooling kernel.

    .venv/bin/python benchmarks/avg_pool.py [--rounds 3] [--epochs 8] [--threads 1]

Prints, measured side by side in one run (alternating, best of `--rounds`; absolute times on shared
machines are noisy):
1. forward + backward of one pooling on a digits_hard supernet's feature map (64 x 8 x 16 x 16);
2. an AutoHAS search of `--epochs` epochs at configs/autohas_nb201_digits_hard.yaml, with the table's
   op and with nn.AvgPool2d(3, stride, 1, count_include_pad=False) in its place.
--threads 1 is what a Ray trial of one CPU computes with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402
from raysearch.spaces import ops  # noqa: E402

OURS = ops.OPS["avg_pool_3x3"]


def torch_pool(c_in, c_out, stride, affine, track):
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


def pooling_ms(module, x, repeats: int = 300) -> float:
    for _ in range(10):
        module(x).sum().backward()
    started = time.perf_counter()
    for _ in range(repeats):
        module(x).sum().backward()
    return (time.perf_counter() - started) / repeats * 1e3


def search_s(config, splits) -> float:
    loop = SearchLoop.from_config(config, splits)
    started = time.perf_counter()
    while not loop.done:
        loop.run_epoch()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "configs" / "autohas_nb201_digits_hard.yaml", [f"search.epochs={args.epochs}"])
    splits = load_splits(config.data)
    x = torch.randn(64, 8, 16, 16, requires_grad=True)
    ms = {"table": [], "torch": []}
    seconds = {"table": [], "torch": []}
    for _ in range(args.rounds):
        for name, factory in (("torch", torch_pool), ("table", OURS)):
            ms[name].append(pooling_ms(factory(8, 8, 1, False, False), x))
            ops.OPS["avg_pool_3x3"] = factory  # the supernet is built from the table
            seconds[name].append(search_s(config, splits))
    ops.OPS["avg_pool_3x3"] = OURS
    best = {name: (min(ms[name]), min(seconds[name])) for name in ms}
    print(f"{'':24}{'torch':>10}{'table':>10}{'speed-up':>10}")
    for k, label in enumerate(("pooling fwd+bwd ms", f"AutoHAS {args.epochs} epochs s")):
        print(f"{label:24}{best['torch'][k]:10.3f}{best['table'][k]:10.3f}{best['torch'][k] / best['table'][k]:9.2f}x")


if __name__ == "__main__":
    main()
