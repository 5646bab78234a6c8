"""DHA vs Sequential DHA vs the best fixed cell (vs AutoHAS + its retraining) on NB201 over digits and digits_hard.

    .venv/bin/python benchmarks/dha_digits.py [--seeds 10] [--datasets digits,digits_hard] [--only dha,...] [--json FILE]

Each method runs at its shipped config in a plain loop on 1 CPU thread (the loop a 1-CPU Ray trial runs):
DHA and Sequential DHA end with their trained model (tested as it is); the fixed cell (all 3x3
convolutions, the best NB201 cell on digits_hard) trains from scratch for DHA's epochs on DHA's data
(search-train + search-val, its batch size and training section): the yardstick issue 30 sets, DHA within
2 points of it; AutoHAS retrains what it derived (`retrain.epochs`), as `raysearch run` does. Printed:
test accuracy mean +- std over the seeds, the wall time (retraining included), and for the searches the
support changes per search epoch and the share of parameter-free edges (skip, pool, none) in the cells.
On digits_hard the digits configs run with `data.dataset=digits_hard` and `retrain.batch_size=32`,
AutoHAS with its own digits_hard config.
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

from benchmarks.quality_digits_hard import parameter_free_share  # noqa: E402
from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402
from raysearch.spaces import build_space  # noqa: E402
from raysearch.training import accuracy  # noqa: E402

HARD = ("data.dataset=digits_hard", "retrain.batch_size=32")
BEST_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
METHODS = {  # label: {dataset: (config, overrides)}
    "dha": {"digits": ("dha_nb201_digits", ()), "digits_hard": ("dha_nb201_digits", HARD)},
    "sequential dha": {"digits": ("sequential_dha_nb201_digits", ()),
                       "digits_hard": ("sequential_dha_nb201_digits", HARD)},
    "fixed cell": {"digits": ("dha_nb201_digits", ()), "digits_hard": ("dha_nb201_digits", HARD)},
    "autohas + retraining": {"digits": ("autohas_nb201_digits", ()),
                             "digits_hard": ("autohas_nb201_digits_hard", ())},
}


def fixed_cell(config) -> dict:
    """The best fixed cell trained from scratch for the config's search epochs on DHA's data."""
    started = time.perf_counter()
    splits = load_splits(config.data)
    space = build_space(config.space, splits.shape)
    torch.manual_seed(config.seed)
    train = TrainLoop(space.network(space.parse(BEST_CELL)), splits.train_and_val(), {"test": splits.test},
                      config.training, config.training.lr, config.training.weight_decay, config.search.epochs,
                      config.search.batch_size, config.seed)
    for _ in range(config.search.epochs):
        test = train.run_epoch()["test_acc"]
    return {"test": test, "seconds": time.perf_counter() - started, "genotype": BEST_CELL}


def search(config) -> dict:
    """Test accuracy, wall seconds (any retraining included), genotype and the support changes per search
    epoch of one method and seed."""
    started = time.perf_counter()
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    changes = []
    while not loop.done:
        metrics = loop.run_epoch()
        if "support_changes" in metrics and metrics.get("searching", 1.0):
            changes.append(metrics["support_changes"])
    algorithm, result = loop.algorithm, loop.algorithm.derive()
    if algorithm.final_model:
        model = loop.model if loop.model is not None else algorithm.derived_logits  # what the run tests
        _, test = accuracy(model, *splits.test, torch.device("cpu"))
    else:
        torch.manual_seed(config.seed)
        train = TrainLoop(algorithm.space.network(result.genotype), splits.train_and_val(), {"test": splits.test},
                          config.training, result.hparams["lr"], result.hparams["weight_decay"],
                          config.retrain_epochs, config.retrain_batch_size, config.seed,
                          optimizer=result.hparams.get("optimizer", "sgd"))
        for _ in range(config.retrain_epochs):
            test = train.run_epoch()["test_acc"]
    return {"test": test, "seconds": time.perf_counter() - started, "genotype": result.genotype.to_string(),
            "support_changes": statistics.mean(changes) if changes else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", default="digits,digits_hard")
    parser.add_argument("--only", help="comma-separated methods: " + ", ".join(METHODS))
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a 1-CPU trial computes
    methods = args.only.split(",") if args.only else list(METHODS)
    out = []
    print(f"{'dataset':12} {'method':22} {'test':>7} {'std':>7} {'wall s':>7} {'changes':>8} {'free':>5}")
    for dataset in args.datasets.split(","):
        for method in methods:
            name, overrides = METHODS[method][dataset]
            runs = []
            for seed in range(args.seeds):
                config = load_config(ROOT / "configs" / f"{name}.yaml", [*overrides, f"seed={seed}"])
                runs.append(fixed_cell(config) if method == "fixed cell" else search(config))
            tests = [r["test"] for r in runs]
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            changes = [r["support_changes"] for r in runs if r.get("support_changes") is not None]
            free = statistics.mean(parameter_free_share(r["genotype"]) for r in runs)
            print(f"{dataset:12} {method:22} {statistics.mean(tests):7.4f} {std:7.4f} "
                  f"{statistics.mean(r['seconds'] for r in runs):7.1f} "
                  f"{statistics.mean(changes) if changes else float('nan'):8.2f} {free:5.2f}", flush=True)
            for seed, r in enumerate(runs):
                print(f"    seed {seed}: {r['test']:.4f}  {r['seconds']:.1f} s  {r['genotype']}", flush=True)
            out.append({"dataset": dataset, "method": method, "runs": runs})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
