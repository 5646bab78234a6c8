"""A sweep of many short searches over a simulated multi-node cluster: throughput and the driver's overhead.

    .venv/bin/python benchmarks/sweep_scale.py [--trials 200] [--nodes 4] [--cpus-per-node 1]

Starts a `ray.cluster_utils.Cluster` (a head without CPUs and `--nodes`
worker nodes, all in this machine), then `raysearch.sweep` of `--trials`
random searches (tiny AutoHAS on digits: one epoch of 4 steps, a sampled
encoding lr) with MLflow tracking and Tune's actor reuse, and no retraining.
Prints trials per minute, the driver's scheduling overhead per trial, and
that no trial was lost or run twice (results.parquet and the MLflow child
runs each hold every trial exactly once).

The driver's scheduling overhead per trial is the CPU time the driver
process spends while Tune runs (its loop, result processing, the MLflow and
progress callbacks, Ray's client threads), divided by the trials; the goal
is <= 0.15 s. Two more figures say where the rest of the wall time goes:
the time a slot sits idle between trials, (slots x sweep wall time - the
trials' own run time) / trials, which also counts the trial processes'
start and stop and, with more slots than real cores, waiting for a core;
and the rest of the call outside Tune (set-up; then results.parquet, every search's
encodings plots and MLflow artifacts, the end table) per trial.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from ray.tune import Callback  # noqa: E402

from raysearch.config import from_dict  # noqa: E402


class DriverClock(Callback):
    """Writes the driver's CPU and wall seconds from Tune's first loop step to the end of the experiment
    into `path` (Tune pickles its callbacks, so it hands its figures over through a file)."""

    def __init__(self, path: str):
        self.path, self.start = path, None

    def on_step_begin(self, iteration, trials, **info):
        if self.start is None:
            self.start = (time.process_time(), time.perf_counter())

    def on_experiment_end(self, trials, **info):
        cpu, wall = time.process_time() - self.start[0], time.perf_counter() - self.start[1]
        Path(self.path).write_text(f"{cpu} {wall}")


def _config(trials: int, slots: int):
    return from_dict({
        "name": "sweep_scale", "seed": 0,
        "data": {"dataset": "digits", "val_fraction": 0.25},
        "space": {"name": "nb201", "channels": 2, "cells_per_stage": 1, "stages": 1},
        "search": {"algorithm": "autohas", "epochs": 1, "batch_size": 256},
        "retrain": {"enabled": False},
        "ray": {"cpus_per_trial": 1.0},
        "sweep": {"algorithm": "random", "num_samples": trials, "max_concurrent": slots,
                  "params": {"search.encoding_lr": {"loguniform": [0.001, 0.1]}}},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    import raysearch

    slots = args.nodes * args.cpus_per_node
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.cpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as folder:
            clock = Path(folder) / "clock"
            started = time.perf_counter()
            summary = raysearch.sweep(_config(args.trials, slots), output_dir=Path(folder) / "run",
                                      callbacks=[DriverClock(str(clock))])
            wall = time.perf_counter() - started
            driver_cpu, tune_wall = map(float, clock.read_text().split())
            rows = [r for r in pq.read_table(Path(folder) / "run" / "results.parquet").to_pylist()
                    if r["role"] == "search"]
            client = MlflowClient(f"sqlite:///{Path(folder) / 'run' / 'mlflow.db'}")
            children = client.search_runs([summary.mlflow_experiment_id],
                                          f"tags.mlflow.parentRunId = '{summary.mlflow_parent_run_id}'",
                                          max_results=10 * args.trials)
    finally:
        ray.shutdown()
        cluster.shutdown()

    sweep_s = summary.search_seconds
    busy = sum(r["seconds"] or 0.0 for r in rows)
    ids = [r["trial_id"] for r in rows]
    finished = sum(r["status"] == "TERMINATED" for r in rows)
    print(f"{args.trials} searches on {args.nodes} simulated nodes x {args.cpus_per_node} CPU "
          f"({slots} slots, {os.cpu_count()} real cores), actor reuse, MLflow tracking")
    print(f"sweep wall time           {sweep_s:8.1f} s   (Tune's own loop {tune_wall:.1f} s)")
    print(f"trials per minute         {60 * len(rows) / sweep_s:8.1f}")
    print(f"mean trial run time       {busy / max(len(rows), 1):8.3f} s")
    n = max(len(rows), 1)
    print(f"driver overhead/trial     {driver_cpu / n:8.3f} s   CPU of the driver while Tune runs (goal <= 0.15 s)")
    print(f"slot idle/trial           {(slots * tune_wall - busy) / n:8.3f} s   between trials: process start/stop, "
          f"waiting for a core")
    print(f"wrap-up/trial             {(wall - sweep_s) / n:8.3f} s   outside Tune: set-up, then parquet, plots, MLflow "
          f"artifacts (whole call {wall:.1f} s)")
    print(f"trials in results.parquet {len(rows)} ({len(set(ids))} distinct, {finished} finished); "
          f"MLflow child runs {len(children)}")
    lost = args.trials - len(set(ids))
    twice = len(ids) - len(set(ids))
    print("no trial lost or run twice" if lost == 0 and twice == 0 and len(children) == args.trials
          else f"LOST {lost}, TWICE {twice}, MLflow children {len(children)} of {args.trials}")


if __name__ == "__main__":
    main()
