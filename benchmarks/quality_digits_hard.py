"""Search quality on digits_hard: what a search derives, and how its derived configuration retrains.

    .venv/bin/python benchmarks/quality_digits_hard.py [--seeds 3] CONFIG[:OVERRIDE;OVERRIDE...] ...

Each argument is a config in configs/ (name without .yaml) and, after a colon, `--set` overrides separated
by semicolons, e.g. `gdas_nb201_digits:data.dataset=digits_hard`. For each, and each seed: the search in a
plain loop, then the derived cell retrained from scratch with the derived lr and weight decay on
search-train + search-val (the config's retraining recipe and epochs). Prints the mean search seconds,
the retrained test accuracy mean and std over seeds, the mean share of parameter-free edges (none, skip,
pooling) and every derived cell. Compare with the fixed cells of benchmarks/digits_hard_cells.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402

PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3")
DEFAULT = ["autohas_nb201_digits:data.dataset=digits_hard",
           "autohas_nb201_digits_hard",
           "gdas_nb201_digits:data.dataset=digits_hard",
           "gdas_nb201_digits:data.dataset=digits_hard;space.ops=[skip_connect,nor_conv_1x1,nor_conv_3x3,avg_pool_3x3]"]


def run(name: str, overrides: list[str], seed: int) -> tuple[float, float, str, float]:
    config = load_config(ROOT / "configs" / f"{name}.yaml", [*overrides, f"seed={seed}"])
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    started = time.perf_counter()
    while not loop.done:
        loop.run_epoch()
    seconds = time.perf_counter() - started
    result = loop.algorithm.derive()
    lr = result.hparams["lr"]
    torch.manual_seed(seed)
    train = TrainLoop(loop.algorithm.space.network(result.genotype), splits.train_and_val(), {"test": splits.test},
                      config.training, lr, result.hparams["weight_decay"], config.retrain_epochs,
                      config.search.batch_size, seed, optimizer=result.hparams.get("optimizer", "sgd"))
    for _ in range(config.retrain_epochs):
        metrics = train.run_epoch()
    ops = getattr(result.genotype, "ops", ())
    free = sum(op in PARAMETER_FREE for op in ops) / max(len(ops), 1)
    return seconds, metrics["test_acc"], result.genotype.to_string(), free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("runs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    print(f"{'config':70} {'search s':>8} {'test':>7} {'std':>6} {'free':>5}")
    for spec in args.runs:
        name, _, rest = spec.partition(":")
        overrides = [o for o in rest.split(";") if o]
        runs = [run(name, overrides, seed) for seed in range(args.seeds)]
        accs = [r[1] for r in runs]
        print(f"{spec:70} {statistics.mean(r[0] for r in runs):8.1f} {statistics.mean(accs):7.4f} "
              f"{statistics.stdev(accs) if len(accs) > 1 else 0.0:6.4f} {statistics.mean(r[3] for r in runs):5.2f}",
              flush=True)
        for seed, r in enumerate(runs):
            print(f"    seed {seed}: {r[1]:.4f}  {r[2]}", flush=True)


if __name__ == "__main__":
    main()
