"""The black-box baselines side by side at the same budget on digits.

    .venv/bin/python benchmarks/baselines_digits.py [--budget-epochs 100] [--epochs 10] [--seed 0]
                                                    [--methods random,asha,bohb,tpe,rea,rank_nosh]

Runs `configs/<method>_nb201_digits.yaml` for each method in one local Ray,
with the same trial-epoch budget, trial length and seed, each retraining its
best configuration on search-train + search-val. Prints, per method: the best
search-val accuracy, the retrained test accuracy, the sweep's and the
retraining's wall time, the trials run and how many failed. Run directories go
to runs/bench-baselines-<time>/<method>/ (MLflow stores included).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import raysearch  # noqa: E402
from raysearch.baselines import BASELINES  # noqa: E402

METHODS = tuple(BASELINES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-epochs", type=int, default=100, help="trial-epochs per method")
    parser.add_argument("--epochs", type=int, default=10, help="one trial's full training")
    parser.add_argument("--retrain-epochs", type=int, default=20, help="retraining of each method's best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")

    import ray

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)  # one Ray for every method
    out = ROOT / "runs" / f"bench-baselines-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = []
    try:
        for method in methods:
            config = raysearch.load_config(ROOT / "configs" / f"{method}_nb201_digits.yaml", [
                f"seed={args.seed}", f"search.epochs={args.epochs}", f"search.budget_epochs={args.budget_epochs}",
                f"retrain.epochs={args.retrain_epochs}",
                *([] if method != "rank_nosh" else ["search.level_epochs=null"]),  # levels follow --epochs
            ])
            started = time.monotonic()
            summary = raysearch.run(config, output_dir=out / method)
            rows.append((method, summary, time.monotonic() - started))
    finally:
        ray.shutdown()

    print(f"\n{args.budget_epochs} trial-epochs per method, {args.epochs} epochs per trial, seed {args.seed}, "
          f"{os.cpu_count()} CPUs; runs in {out}")
    print(f"{'method':<10} {'best val':>8} {'test':>7} {'sweep s':>8} {'retrain s':>9} {'total s':>8} "
          f"{'trials':>6} {'failed':>6}")
    for method, s, total in rows:
        print(f"{method:<10} {s.val_accuracy:>8.4f} {s.test_accuracy:>7.4f} {s.search_seconds:>8.1f} "
              f"{s.retrain_seconds:>9.1f} {total:>8.1f} {s.extra['trials']:>6} {s.extra['failed_trials']:>6}")


if __name__ == "__main__":
    main()
