"""Data-parallel scaling of a search step, and the cost of running a search as a Ray Tune trial.

    .venv/bin/python benchmarks/ddp_scaling.py [--algorithms autohas gdas darts drnas] [--steps 30]
                                               [--tune-epochs 100] [--repeats 3] [--skip-tune] [--skip-scaling]

1. Step throughput with 1 and 2 workers at the same global batch: the 2
   workers are gloo processes (torch.multiprocessing, no Ray) with one thread
   each, the 1 worker is one process with one thread, so the ratio is what
   sharding buys on 2 cores. Also the collectives and payload bytes per step
   (raysearch.distributed counts them).
2. Tune overhead: the same search (configs/autohas_nb201_digits.yaml, one
   worker) timed as a plain SearchLoop, in its own process (as a script a
   user runs: interpreter, imports, data, epochs, what the trial's actor
   does too) and warm in this process (the epochs alone), and as a Tune
   trial on an already started Ray (trainables/search.py: reports and
   checkpoints every epoch), the process and the trial in turn, `--repeats`
   pairs; the goal is <= 5% for a search of about a minute.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.distributed import LOCAL, TorchDistributed  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402

CONFIGS = {"autohas": "autohas_nb201_digits", "gdas": "gdas_nb201_digits", "darts": "darts_nb201_digits",
           "drnas": "drnas_nb201_digits", "sdarts_rs": "sdarts_rs_nb201_digits"}
BATCH = 64  # global batch of the throughput runs (the shipped digits configs use 32-64)


def _config(algorithm: str, workers: int):
    return load_config(ROOT / "configs" / f"{CONFIGS[algorithm]}.yaml",
                       [f"search.batch_size={BATCH}", f"ray.workers={workers}"])


def _step_times(algorithm: str, dist, steps: int) -> tuple[list[float], int, int]:
    """Seconds of each of `steps` search steps after 3 warm-up steps; collectives and bytes per step."""
    loop = SearchLoop.from_config(_config(algorithm, dist.world_size), load_splits(_config(algorithm, 1).data),
                                  dist=dist)
    for _ in range(3):
        loop.algorithm.step(next(loop.train), next(loop.val))
    calls, sent = dist.collectives, dist.bytes
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        loop.algorithm.step(next(loop.train), next(loop.val))
        times.append(time.perf_counter() - started)
    return times, (dist.collectives - calls) // steps, (dist.bytes - sent) // steps


def _rank(rank: int, port: int, algorithms: list[str], steps: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = {name: _step_times(name, TorchDistributed(), steps) for name in algorithms}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def scaling(algorithms: list[str], steps: int) -> None:
    torch.set_num_threads(1)
    single = {name: _step_times(name, LOCAL, steps) for name in algorithms}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/rank0.pt"
        mp.spawn(_rank, args=(port, algorithms, steps, out), nprocs=2, join=True)
        sharded = torch.load(out, weights_only=True)
    print(f"global batch {BATCH}, median of {steps} steps; 1 worker = 1 process x 1 thread, "
          "2 workers = 2 gloo processes x 1 thread")
    print(f"{'algorithm':<10} {'1 worker ms':>12} {'2 workers ms':>13} {'speed-up':>9} {'samples/s 1':>12} "
          f"{'samples/s 2':>12} {'collectives':>12} {'KiB/step':>9}")
    for name in algorithms:
        one, two = statistics.median(single[name][0]), statistics.median(sharded[name][0])
        _, calls, sent = sharded[name]
        print(f"{name:<10} {one * 1e3:12.1f} {two * 1e3:13.1f} {one / two:8.2f}x {BATCH / one:12.0f} "
              f"{BATCH / two:12.0f} {calls:12d} {sent / 1024:9.1f}")


COLD_PLAIN = """
import sys, time
sys.path.insert(0, {root!r})
import torch
from raysearch.config import load_config
from raysearch.data import load_splits
from raysearch.search import SearchLoop
torch.set_num_threads(1)
config = load_config({config!r}, {overrides!r})
loop = SearchLoop.from_config(config, load_splits(config.data))
while not loop.done:
    loop.run_epoch()
"""


def _cold_plain(path: Path, overrides: list[str]) -> float:
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", COLD_PLAIN.format(root=str(ROOT), config=str(path), overrides=overrides)],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - started


def _tune_trial(config) -> tuple[float, float]:
    """(seconds of Tuner.fit, the trial's own time_total_s) of the search as one Tune trial."""
    from ray import tune

    from trainables.search import search_trainable

    with tempfile.TemporaryDirectory() as storage:
        trainable = tune.with_resources(search_trainable, {"cpu": 1})
        started = time.perf_counter()
        grid = tune.Tuner(trainable, param_space={"experiment": config.to_dict()},
                          run_config=tune.RunConfig(storage_path=storage, name="overhead", verbose=0)).fit()
        fit = time.perf_counter() - started
    assert grid[0].metrics["epoch"] == config.search.epochs
    return fit, grid[0].metrics["time_total_s"]


def tune_overhead(epochs: int, repeats: int) -> None:
    """The search as a Tune trial against the plain loop in its own process (interpreter, imports, data,
    epochs, as the trial's actor starts), in turn `repeats` times so both see the same machine; and warm,
    in this process with the data loaded (the epochs alone), once."""
    import ray

    path, overrides = ROOT / "configs" / "autohas_nb201_digits.yaml", [f"search.epochs={epochs}"]
    config = load_config(path, overrides)
    splits = load_splits(config.data)
    torch.set_num_threads(1)
    started = time.perf_counter()
    loop = SearchLoop.from_config(config, splits)
    while not loop.done:
        loop.run_epoch()
    warm = time.perf_counter() - started

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    colds, fits, insides = [], [], []
    for _ in range(repeats):
        colds.append(_cold_plain(path, overrides))
        fit, inside = _tune_trial(config)
        fits.append(fit)
        insides.append(inside)
    ray.shutdown()
    ratio = statistics.median(f / c for f, c in zip(fits, colds))
    cold, fit, inside = (statistics.median(x) for x in (colds, fits, insides))
    print(f"\nTune overhead, {config.name} for {epochs} epochs (1 thread each; Ray already started; "
          f"medians of {repeats}, run in turn)")
    print(f"plain loop, own process {cold:7.1f} s   (interpreter, imports, data, epochs: what the trial's actor does)"
          f"   runs: {' '.join(f'{c:.1f}' for c in colds)}")
    print(f"Tune trial (fit)        {fit:7.1f} s   {100 * (ratio - 1):+6.1f}% over its own process (median of the "
          f"pairs)   runs: {' '.join(f'{f:.1f}' for f in fits)}")
    print(f"plain loop, warm        {warm:7.1f} s   (in this process, data loaded: the epochs alone)")
    print(f"inside the trial        {inside:7.1f} s   {100 * (inside / warm - 1):+6.1f}% over warm   "
          "(data, the search, its reports and checkpoints)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["autohas", "gdas", "darts", "drnas"], choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tune-epochs", type=int, default=100, help="epochs of the Tune-overhead search (~1 min)")
    parser.add_argument("--repeats", type=int, default=3, help="Tune-overhead pairs (plain process, trial), in turn")
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    if not args.skip_scaling:
        scaling(args.algorithms, args.steps)
    if not args.skip_tune:
        tune_overhead(args.tune_epochs, args.repeats)


if __name__ == "__main__":
    main()
