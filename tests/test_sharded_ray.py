"""A search sharded over Ray Train workers inside its Tune trial (`ray.workers: 2`), end to end on 2 CPUs."""

import json
import time

import pyarrow.parquet as pq
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune

import raysearch
from raysearch.callbacks import SHARDS_PLACEMENT_GROUP, ReleaseShards, register_shard_group
from raysearch.data import load_splits
from raysearch.search import SearchLoop
from tests.conftest import TINY, tiny_config
from trainables.search import _trainer_class, search_trainable

# 1 CPU for the trial, 2 x 0.5 for its workers: what fits on 2 CPUs (RAY_NOTES).
SHARDED = {"workers": 2, "cpus_per_worker": 0.5, "batch_norm": "synchronized"}


def _groups_left() -> dict:
    """Placement groups not REMOVED, after giving Ray a few seconds to finish removals."""
    for _ in range(20):
        left = {k: v["state"] for k, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"}
        if not left:
            return left
        time.sleep(0.5)
    return left


def test_a_sharded_search_reports_like_one_process_and_matches_one_worker(tmp_path, ray_session):
    config = tiny_config(ray=SHARDED, retrain={"enabled": False})
    summary = raysearch.run(config, output_dir=tmp_path / "run")
    assert _groups_left() == {}, "a placement group outlived its trial"

    loop = SearchLoop.from_config(config, load_splits(config.data))  # one process, the same global batches
    while not loop.done:
        loop.run_epoch()
    assert summary.genotype == loop.algorithm.derive().genotype.to_string()
    history = json.loads((tmp_path / "run" / "artifacts" / "encodings.json").read_text())["history"]
    assert len(history) == config.search.epochs
    for name, probabilities in loop.history[-1].items():
        # 32 Adam steps at encoding_lr 0.03 amplify float rounding in near-zero gradients to ~1e-4
        torch.testing.assert_close(torch.tensor(history[-1][name]), torch.tensor(probabilities), rtol=0,
                                   atol=1e-3)

    rows = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert [(r["role"], r["status"], r["epochs"]) for r in rows] == [("search", "TERMINATED", 2)]
    client = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    (child,) = client.search_runs([summary.mlflow_experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary.mlflow_parent_run_id}'")
    assert [m.step for m in client.get_metric_history(child.info.run_id, "derived_val_acc")] == [1, 2]


def test_a_sharded_trial_stopped_by_tune_leaves_no_placement_group(tmp_path, ray_session):
    """Tune stops the trial while its workers run the next epoch (a scheduler's decision, a budget)."""
    assert not any(type(c).__name__ == "PlacementGroupCleanerCallback"
                   for c in _trainer_class(False)(lambda: None)._create_default_callbacks())
    config = tiny_config(ray=SHARDED, search={"epochs": 4})
    grid = tune.Tuner(search_trainable, param_space={"experiment": config.to_dict()}, run_config=tune.RunConfig(
        storage_path=str(tmp_path), name="stopped", stop={"training_iteration": 1}, verbose=0,
        callbacks=[ReleaseShards()])).fit()
    assert grid[0].metrics["epoch"] == 1 and grid[0].metrics[SHARDS_PLACEMENT_GROUP]
    assert _groups_left() == {}, "the stopped trial's worker group kept its CPUs"


def _removed(group: str) -> bool:
    """Whether the placement group (hex id) is REMOVED, after giving Ray a few seconds to remove it."""
    for _ in range(20):
        if ray.util.placement_group_table()[group]["state"] == "REMOVED":
            return True
        time.sleep(0.25)
    return False


def test_worker_groups_are_released_when_their_trial_fails_before_any_report(ray_session):
    """A trial that dies with its node before its first epoch named no group in a result: rank 0's
    registration is what lets the driver remove it (before Tune retries the trial, so the retry finds
    the CPUs); a result from a new attempt's group releases the attempts before it; a paused trial's
    group goes."""
    from types import SimpleNamespace

    from ray.util.placement_group import placement_group, remove_placement_group

    def group():
        pg = placement_group([{"CPU": 0.25}])
        ray.get(pg.ready(), timeout=30)
        return pg

    unregistered = group()
    register_shard_group("t1", unregistered.id.hex())  # no ReleaseShards, so no registry: a no-op
    remove_placement_group(unregistered)
    callback = ReleaseShards()
    callback.setup()
    trial = SimpleNamespace(trial_id="t1", status="PENDING")
    first, second, third = (group().id.hex() for _ in range(3))
    register_shard_group("t1", first)
    callback.on_trial_recover(0, [trial], trial)  # failed before any report; Tune is about to retry
    assert _removed(first)
    register_shard_group("t1", second)
    register_shard_group("t1", third)
    callback.on_trial_result(0, [trial], trial, {SHARDS_PLACEMENT_GROUP: third})
    assert _removed(second) and not _removed_now(third)
    callback.on_step_begin(0, [SimpleNamespace(trial_id="t1", status="RUNNING")])
    callback.on_step_begin(0, [SimpleNamespace(trial_id="t1", status="PAUSED")])
    assert _removed(third)


def _removed_now(group: str) -> bool:
    return ray.util.placement_group_table()[group]["state"] == "REMOVED"


def test_workers_are_for_differentiable_searches_and_split_the_batch():
    from raysearch.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="search.batch_size: 63 does not split evenly over ray.workers = 2"):
        tiny_config(ray={"workers": 2}, search={"batch_size": 63})
    with pytest.raises(ConfigError, match="ray.workers: 2 shards a differentiable search"):
        from_dict({**TINY, "search": {"algorithm": "random", "epochs": 2}, "ray": {"workers": 2}})
