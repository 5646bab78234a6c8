"""AutoHAS cost, measured side by side in one run (absolute times on shared machines are noisy).

    .venv/bin/python benchmarks/autohas_cost.py [--steps 100] [--channels 8]

Prints:
1. search time / time to train the derived network for the same steps on the same batches
   (AutoHAS reports 1.1x-1.9x), and / time of plain SGD steps on the same sampled supernet
   paths (isolates AutoHAS's own overhead: a validation pass through W' per step);
2. memory of one AutoHAS step with 3, 9 and 27 basis values per HP: bytes autograd saves for
   backward (what a per-basis weight copy would grow), and the process's peak RSS
   (each count in a fresh process).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.memory import saved_tensor_bytes  # noqa: E402
from raysearch.relax import gumbel_hard  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402
from raysearch.spaces import build_space  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "autohas_nb201_digits.yaml"
MULTIPLIERS = {3: [0.5, 1.0, 2.0], 9: None, 27: [0.05 * 1.25**i for i in range(27)]}


def _loop(channels: int, n_basis: int | None = None):
    overrides = [f"space.channels={channels}"]
    if n_basis is not None and MULTIPLIERS[n_basis] is not None:
        overrides += [f"search.lr_multipliers={MULTIPLIERS[n_basis]}", f"search.wd_multipliers={MULTIPLIERS[n_basis]}"]
    config = load_config(CONFIG, overrides)
    splits = load_splits(config.data)
    return config, splits, SearchLoop.from_config(config, splits)


def _timed(step, batches) -> float:
    for batch in batches[:5]:  # warm-up
        step(*batch)
    start = time.perf_counter()
    for batch in batches:
        step(*batch)
    return time.perf_counter() - start


def time_ratio(steps: int, channels: int) -> tuple[float, float, float]:
    config, splits, loop = _loop(channels)
    batches = [(next(loop.train), next(loop.val)) for _ in range(steps)]
    algo = loop.algorithm
    search = _timed(algo.step, batches)

    # Plain SGD on the supernet along paths sampled from the final encodings.
    sgd = torch.optim.SGD(algo.net.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def path_step(train, _val):
        weights, active = gumbel_hard(algo.enc["arch"].detach(), 10.0, gen)
        sgd.zero_grad()
        F.cross_entropy(algo.net(train[0], weights, active), train[1]).backward()
        sgd.step()

    paths = _timed(path_step, batches)

    net = build_space(config.space, splits.shape).network(algo.derive().genotype)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def train_step(train, _val):
        opt.zero_grad()
        F.cross_entropy(net(train[0]), train[1]).backward()
        opt.step()

    return search, _timed(train_step, batches), paths


def memory_child(n_basis: int, channels: int) -> None:
    """Runs in a fresh process: prints saved bytes and peak RSS (MiB) of AutoHAS steps."""
    _, _, loop = _loop(channels, n_basis)
    batch = next(loop.train), next(loop.val)
    saved = saved_tensor_bytes(lambda: loop.algorithm.step(*batch))
    for _ in range(20):
        loop.algorithm.step(next(loop.train), next(loop.val))
    weights = sum(p.numel() * p.element_size() for p in loop.algorithm.weights)
    print(saved, weights, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.channels)
        return

    search, train, paths = time_ratio(args.steps, args.channels)
    print(f"AutoHAS search time, {args.steps} steps, C={args.channels}, {torch.get_num_threads()} threads")
    print(f"  search {search:.2f}s  derived network {train:.2f}s  ratio {search / train:.2f}x")
    print(f"  search {search:.2f}s  plain SGD on sampled paths {paths:.2f}s  ratio {search / paths:.2f}x")
    print("memory of an AutoHAS step vs basis values per HP (lr and wd)")
    print(f"  {'basis':>5}  {'saved for backward':>18}  {'vs 3':>6}  {'weights':>8}  {'peak RSS':>9}")
    base = None
    for n in (3, 9, 27):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--channels", str(args.channels)],
                             capture_output=True, text=True, check=True).stdout.split()
        saved, weights, rss = int(out[0]), int(out[1]), float(out[2])
        base = base or saved
        print(f"  {n:>5}  {saved / 1024:>15.1f} KiB  {saved / base:>5.3f}x  {weights / 1024:>5.1f} KiB"
              f"  {rss:>6.0f} MiB")


if __name__ == "__main__":
    main()
