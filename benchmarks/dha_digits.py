"""DHA vs Sequential DHA vs AutoHAS (+ its retraining) on NB201 over digits and digits_hard.

    .venv/bin/python benchmarks/dha_digits.py [--seeds 3] [--datasets digits,digits_hard] [--json FILE]

Each method runs at its shipped config in a plain loop on this machine's CPUs (the same loop a Ray
trial runs): DHA and Sequential DHA end with their trained model (tested as it is), AutoHAS retrains
what it derived from scratch (its derived per-step lr and weight decay, `retrain.epochs`), as
`raysearch run` does. Printed: test accuracy mean +- std over the seeds and the total wall time,
retraining included. On digits_hard the digits configs run with `data.dataset=digits_hard` and
`retrain.batch_size=32`, AutoHAS with its own digits_hard config.
"""

from __future__ import annotations

import argparse
import json
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
from raysearch.training import accuracy  # noqa: E402

HARD = ("data.dataset=digits_hard", "retrain.batch_size=32")
METHODS = {  # label: {dataset: (config, overrides)}
    "dha": {"digits": ("dha_nb201_digits", ()), "digits_hard": ("dha_nb201_digits", HARD)},
    "sequential dha": {"digits": ("sequential_dha_nb201_digits", ()),
                       "digits_hard": ("sequential_dha_nb201_digits", HARD)},
    "autohas + retraining": {"digits": ("autohas_nb201_digits", ()),
                             "digits_hard": ("autohas_nb201_digits_hard", ())},
}


def run(config) -> tuple[float, float, str]:
    """(test accuracy, wall seconds including any retraining, genotype) of one method and seed."""
    started = time.perf_counter()
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    while not loop.done:
        loop.run_epoch()
    algorithm, result = loop.algorithm, loop.algorithm.derive()
    if algorithm.final_model:
        _, test = accuracy(algorithm.derived_logits, *splits.test, torch.device("cpu"))
    else:
        torch.manual_seed(config.seed)
        train = TrainLoop(algorithm.space.network(result.genotype), splits.train_and_val(), {"test": splits.test},
                          config.training, result.hparams["lr"], result.hparams["weight_decay"],
                          config.retrain_epochs, config.retrain_batch_size, config.seed,
                          optimizer=result.hparams.get("optimizer", "sgd"))
        for _ in range(config.retrain_epochs):
            test = train.run_epoch()["test_acc"]
    return test, time.perf_counter() - started, result.genotype.to_string()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="digits,digits_hard")
    parser.add_argument("--only", help="comma-separated methods: " + ", ".join(METHODS))
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a 1-CPU trial computes
    methods = args.only.split(",") if args.only else list(METHODS)
    out = []
    print(f"{'dataset':12} {'method':22} {'test':>7} {'std':>7} {'wall s':>7}")
    for dataset in args.datasets.split(","):
        for method in methods:
            name, overrides = METHODS[method][dataset]
            runs = []
            for seed in range(args.seeds):
                config = load_config(ROOT / "configs" / f"{name}.yaml", [*overrides, f"seed={seed}"])
                runs.append(run(config))
            tests, seconds = [r[0] for r in runs], [r[1] for r in runs]
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            print(f"{dataset:12} {method:22} {statistics.mean(tests):7.4f} {std:7.4f} {statistics.mean(seconds):7.1f}",
                  flush=True)
            for seed, (test, wall, genotype) in enumerate(runs):
                print(f"    seed {seed}: {test:.4f}  {wall:.1f} s  {genotype}", flush=True)
            out.append({"dataset": dataset, "method": method, "tests": tests, "seconds": seconds,
                        "genotypes": [r[2] for r in runs]})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
