"""Losing a node mid-epoch on a simulated cluster (ray.cluster_utils: a head and two worker nodes, one process).

A sharded search whose worker's node is removed continues from its last
epoch's checkpoint (Tune restarts the trial and with it the Train worker
group) and ends exactly where an undisturbed run ends, with every epoch
reported once. A sweep of sharded searches loses a node the same way and
ends with every search once, each continued from its checkpoint.
"""

import contextlib

import json
import threading
import time
from pathlib import Path

import pytest
import ray
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from ray.tune import Callback

import raysearch
from raysearch.config import from_dict
from tests.conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # each: sharded searches and a restart, ~3 min

EPOCHS = 4
WORKER_CPUS = 1.0  # two workers fill a 2-CPU node: one search per node


class MarkEpoch(Callback):
    """Touches `path` when a trial reports `epoch` (Tune pickles callbacks: it holds a path, not the cluster)."""

    def __init__(self, path: str, epoch: int):
        self.path, self.epoch = path, epoch

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == self.epoch:
            Path(self.path).touch()


def _config(**sections):
    # Batches of 16: ~70 steps an epoch, so the node goes while the workers are inside an epoch.
    return from_dict({**TINY, "search": {"algorithm": "gdas", "epochs": EPOCHS, "batch_size": 16},
                      "ray": {"workers": 2, "cpus_per_worker": WORKER_CPUS, "max_failures": 2},
                      "retrain": {"enabled": False}, **sections})


@contextlib.contextmanager
def _cluster():
    """The head has no CPU; either worker node holds one search's two workers (its trial reserves no CPU)."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _lose_a_worker_node_at_epoch_1(cluster, tmp_path: Path, start) -> dict:
    """Run `start(callbacks)` in a thread, remove a node that hosts a Train worker group once a trial
    reported epoch 1, and return {"summary": what `start` returned} when it finished."""
    marker = tmp_path / "epoch1"
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=start([MarkEpoch(str(marker), 1)])))
    runner.start()
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    hosts = _worker_nodes(cluster)
    assert marker.exists() and hosts, "the sharded search never reached epoch 1 on a worker node"
    cluster.remove_node(hosts[0], allow_graceful=False)
    runner.join(timeout=900)
    assert not runner.is_alive() and "summary" in outcome, "the disturbed run did not finish"
    return outcome


def _worker_nodes(cluster) -> list:
    """The cluster nodes hosting a bundle of a Train worker group (bundles of WORKER_CPUS)."""
    nodes = {node.node_id: node for node in cluster.list_all_nodes()}
    hosts = []
    for group in ray.util.placement_group_table().values():
        if group["state"] == "CREATED" and all(b.get("CPU") == WORKER_CPUS for b in group["bundles"].values()):
            hosts += [nodes[n] for n in group["bundles_to_node_id"].values()]
    return hosts


def _encodings(run_dir: Path) -> list:
    return json.loads((run_dir / "artifacts" / "encodings.json").read_text())["history"]


def test_a_sharded_search_survives_the_loss_of_a_worker_node(tmp_path):
    with _cluster() as cluster:
        undisturbed = raysearch.run(_config(), output_dir=tmp_path / "undisturbed")
        outcome = _lose_a_worker_node_at_epoch_1(cluster, tmp_path, lambda callbacks: raysearch.run(
            _config(), output_dir=tmp_path / "disturbed", callbacks=callbacks))

    disturbed = outcome["summary"]
    failures = list((tmp_path / "disturbed" / "ray").glob("*/*/error.txt"))
    assert failures and "unavailable" in failures[0].read_text(), "the trial never failed: no node was lost"
    assert disturbed.genotype == undisturbed.genotype
    assert _encodings(tmp_path / "disturbed") == _encodings(tmp_path / "undisturbed")
    client = MlflowClient(f"sqlite:///{tmp_path / 'disturbed' / 'mlflow.db'}")
    (child,) = client.search_runs([disturbed.mlflow_experiment_id],
                                  f"tags.mlflow.parentRunId = '{disturbed.mlflow_parent_run_id}'")
    epochs = [int(m.value) for m in client.get_metric_history(child.info.run_id, "epoch")]
    assert epochs == list(range(1, EPOCHS + 1)), f"epochs reported with a gap or twice: {epochs}"


def _epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_a_sweep_of_sharded_searches_loses_a_node_and_keeps_every_search_once(tmp_path):
    """Two sharded searches at once (2 x 1 CPU each, one per node); one node goes mid-epoch, and the
    search it held waits for the other to end instead of taking part of the node that is left."""
    config = _config(sweep={"num_samples": 2, "max_concurrent": 2,
                            "params": {"search.tau_max": {"choice": [10.0, 5.0]}}})
    with _cluster() as cluster:
        outcome = _lose_a_worker_node_at_epoch_1(cluster, tmp_path, lambda callbacks: raysearch.sweep(
            config, output_dir=tmp_path / "sweep", callbacks=callbacks))
        assert ray.util.placement_group_table() == {} or all(
            g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())

    run_dir = tmp_path / "sweep"
    failures = list((run_dir / "ray").glob("search/*/error.txt"))
    assert failures and "unavailable" in failures[0].read_text(), "no search failed: no node was lost"
    rows = [r for r in pq.read_table(run_dir / "results.parquet").to_pylist() if r["role"] == "search"]
    assert len(rows) == 2 and len({r["trial_id"] for r in rows}) == 2, "a search was lost or run twice"
    assert all(r["status"] == "TERMINATED" and r["epochs"] == EPOCHS for r in rows)
    # Tune's own record of each trial: a restarted search continued after its checkpoint, so its
    # results run 1..EPOCHS once; a search restarted from scratch would report epoch 1 twice.
    for trial_dir in (run_dir / "ray" / "search").glob("sweep_trainable_*"):
        assert _epochs(trial_dir / "result.json") == list(range(1, EPOCHS + 1)), trial_dir.name
    summary = outcome["summary"]
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    children = client.search_runs([summary.mlflow_experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary.mlflow_parent_run_id}'")
    assert sorted(c.data.tags["raysearch.trial_id"] for c in children) == sorted(r["trial_id"] for r in rows)
    for child in children:
        epochs = [int(m.value) for m in client.get_metric_history(child.info.run_id, "epoch")]
        assert epochs == list(range(1, EPOCHS + 1)) and child.info.status == "FINISHED"
