"""Search quality on digits_hard: every method at its shipped config, 3 seeds, against fixed cells.

    .venv/bin/python benchmarks/quality_digits_hard.py [--seeds 3] [--first-seed 0] [--only autohas,gdas,...] [--json FILE]
    .venv/bin/python benchmarks/quality_digits_hard.py LABEL=CONFIG[:OVERRIDE;OVERRIDE...] ...

Each run is a config in configs/ (name without .yaml) and, after a colon, `--set` overrides separated by
semicolons, e.g. `gdas_nb201_digits:data.dataset=digits_hard`. For each, and each seed:
- a differentiable search runs in a plain loop, and its derived cell is retrained from scratch on
  search-train + search-val with the derived lr and weight decay (the config's retraining recipe);
- a black-box baseline runs as `raysearch.run` does (one local Ray for all of them), which retrains
  the configuration it selected;
- either way the derived cell is also retrained with the fixed cells' recipe (the training defaults of
  configs/autohas_nb201_digits_hard.yaml without its lr warm-up, 20 epochs in batches of 32, retraining seed = search seed), so that every
  method is compared with the fixed-cell rows on the same footing. For AutoHAS the two columns compare
  its derived lr and weight decay with the training defaults on the same cell.
Prints per run: mean search seconds, retrained test accuracy (own recipe; fixed-cell recipe) mean and
std over seeds, the mean share of parameter-free edges (none, skip, pooling), every derived cell; then the
fixed cells of benchmarks/digits_hard_cells.py. `--json` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.digits_hard_cells import CELLS, RECIPE, reference_config, retrain  # noqa: E402
from raysearch.baselines import BASELINES  # noqa: E402
from raysearch.config import load_config  # noqa: E402
from raysearch.data import load_splits  # noqa: E402
from raysearch.retrain import TrainLoop  # noqa: E402
from raysearch.search import SearchLoop  # noqa: E402
from raysearch.spaces import build_space  # noqa: E402

PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3")
HARD = "data.dataset=digits_hard;retrain.batch_size=32"  # the digits configs on digits_hard, retrained as its configs
ALL_OPS = "space.ops=[none,skip_connect,nor_conv_1x1,nor_conv_3x3,avg_pool_3x3]"
RUNS = {
    "autohas": "autohas_nb201_digits_hard",
    # the digits config as it was when digits_hard came (all five ops, no lr warm-up)
    "autohas (digits settings)": f"autohas_nb201_digits:{HARD};{ALL_OPS};training.warmup_epochs=0",
    "gdas": "gdas_nb201_digits_hard",
    "gdas (digits settings)": f"gdas_nb201_digits:{HARD}",
    "gdas + perturbation": "gdas_nb201_digits_hard:search.selection=perturbation",
    "darts": f"darts_nb201_digits:{HARD}",
    "darts 2nd order": f"darts_nb201_digits:{HARD};search.order=2",
    "darts-pt": f"darts_nb201_digits:{HARD};search.selection=perturbation",
    "darts_es": f"darts_es_nb201_digits:{HARD}",
    "drnas": f"drnas_nb201_digits:{HARD}",
    "drnas progressive": f"drnas_progressive_nb201_digits:{HARD}",
    "sdarts_rs": f"sdarts_rs_nb201_digits:{HARD}",
    **{name: f"{name}_nb201_digits:{HARD}" for name in ("random", "asha", "bohb", "tpe", "rea", "rank_nosh")},
}


def parameter_free_share(genotype: str) -> float:
    ops = re.findall(r"\|([a-z0-9_]+)~\d", genotype)
    return sum(op in PARAMETER_FREE for op in ops) / max(len(ops), 1)


def differentiable(config) -> tuple[float, str, float]:
    """A plain-loop search and the retraining of what it derived: (search s, genotype, test accuracy)."""
    splits = load_splits(config.data)
    loop = SearchLoop.from_config(config, splits)
    started = time.perf_counter()
    while not loop.done:
        loop.run_epoch()
    seconds = time.perf_counter() - started
    result = loop.algorithm.derive()
    torch.manual_seed(config.seed)
    train = TrainLoop(loop.algorithm.space.network(result.genotype), splits.train_and_val(), {"test": splits.test},
                      config.training, result.hparams["lr"], result.hparams["weight_decay"], config.retrain_epochs,
                      config.retrain_batch_size, config.seed, optimizer=result.hparams.get("optimizer", "sgd"))
    for _ in range(config.retrain_epochs):
        metrics = train.run_epoch()
    return seconds, result.genotype.to_string(), metrics["test_acc"]


def baseline(config, out: Path) -> tuple[float, str, float]:
    """`raysearch.run` of a black-box baseline (its sweep, then the retraining of its best)."""
    import raysearch

    summary = raysearch.run(config, output_dir=out)
    return summary.search_seconds, summary.genotype, summary.test_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here (a second batch of seeds)")
    parser.add_argument("--only", help="comma-separated labels of the default runs: " + ", ".join(RUNS))
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--no-fixed", action="store_true", help="skip the fixed-cell reference rows")
    parser.add_argument("--fixed-seeds", type=int, default=5, help="retraining seeds of each fixed cell")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the fixed cells' recipe, e.g. training.warmup_epochs=5 to compare "
                             "AutoHAS's derived lr and wd with the defaults under its own schedule")
    parser.add_argument("runs", nargs="*", help="LABEL=CONFIG[:OVERRIDE;...] (default: every run above)")
    args = parser.parse_args()
    runs = dict(spec.split("=", 1) for spec in args.runs) if args.runs else dict(RUNS)
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(runs))
        if unknown:
            parser.error(f"unknown labels {unknown}; known: {', '.join(runs)}")
        runs = {label: runs[label] for label in args.only.split(",")}

    reference = reference_config(args.recipe)
    ref_splits = load_splits(reference.data)
    ref_space = build_space(reference.space, ref_splits.shape)
    ref_epochs = reference.retrain_epochs
    scratch = Path(tempfile.mkdtemp(prefix="quality-digits-hard-"))
    ray = None
    report = {"runs": {}, "fixed": {}, "threads": torch.get_num_threads()}
    print(f"{'run':26} {'search s':>8} {'test':>7} {'std':>6} {'fixed recipe':>12} {'std':>6} {'free':>5}", flush=True)
    try:
        for label, spec in runs.items():
            name, _, rest = spec.partition(":")
            seeds = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                config = load_config(ROOT / "configs" / f"{name}.yaml", [*(o for o in rest.split(";") if o),
                                                                         f"seed={seed}"])
                if config.search.algorithm in BASELINES:
                    if ray is None:  # one local Ray for every baseline, started as `raysearch run` starts it
                        import ray

                        from raysearch.ray_session import start_ray

                        start_ray(config, None)
                    seconds, genotype, test = baseline(config, scratch / f"{name}-{seed}")
                else:
                    seconds, genotype, test = differentiable(config)
                fixed, _ = retrain(reference, ref_splits, ref_space, genotype, ref_epochs, seed)
                seeds.append({"seed": seed, "search_seconds": seconds, "genotype": genotype, "test_acc": test,
                              "fixed_recipe_test_acc": fixed, "parameter_free": parameter_free_share(genotype)})
            report["runs"][label] = {"spec": spec, "seeds": seeds}
            tests, fixed = [s["test_acc"] for s in seeds], [s["fixed_recipe_test_acc"] for s in seeds]
            print(f"{label:26} {statistics.mean(s['search_seconds'] for s in seeds):8.1f} "
                  f"{statistics.mean(tests):7.4f} {_std(tests):6.4f} {statistics.mean(fixed):12.4f} {_std(fixed):6.4f} "
                  f"{statistics.mean(s['parameter_free'] for s in seeds):5.2f}", flush=True)
            for s in seeds:
                print(f"    seed {s['seed']}: {s['test_acc']:.4f} / {s['fixed_recipe_test_acc']:.4f}  {s['genotype']}",
                      flush=True)
            if args.json:
                args.json.write_text(json.dumps(report, indent=1))
    finally:
        if ray is not None:
            ray.shutdown()
    if not args.no_fixed:
        recipe = ", ".join([*RECIPE, *args.recipe])
        print(f"\nfixed cells, {ref_epochs} epochs ({reference.name} training defaults, {recipe})", flush=True)
        for name, genotype in CELLS.items():
            accs = [retrain(reference, ref_splits, ref_space, genotype, ref_epochs, seed)[0]
                    for seed in range(args.fixed_seeds)]
            report["fixed"][name] = accs
            print(f"{name:26} {'':8} {'':7} {'':6} {statistics.mean(accs):12.4f} {_std(accs):6.4f} "
                  f"{parameter_free_share(genotype):5.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
