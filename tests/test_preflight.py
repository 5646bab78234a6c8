"""Preflight: bad configs are refused before any trial starts, with one error naming the field."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from raysearch import memory as mem
from raysearch import preflight
from raysearch.cli import main
from raysearch.config import ConfigError, load_config
from raysearch.preflight import ClusterView, NodeType, check_cluster, check_config, check_resources
from tests.conftest import tiny_config
from tests.helpers import EXPERIMENT_CONFIGS, ROOT, write_cifar

DEFAULT = str(ROOT / "configs" / "autohas_nb201_digits.yaml")
BASELINE = str(ROOT / "configs" / "random_nb201_digits.yaml")
GB = 1e9


def _refused(capsys, argv) -> str:
    """main(argv) exits 2 with one `raysearch: error:` line; that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("raysearch: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------------- no Ray: data


def test_validate_refuses_a_batch_larger_than_search_train(capsys):
    line = _refused(capsys, ["validate", DEFAULT, "--set", "search.batch_size=1000000000000"])
    assert "search.batch_size: 1000000000000 is larger than search-train (1078 examples)" in line


def test_a_search_refuses_a_batch_larger_than_search_val_and_a_baseline_does_not(capsys):
    small_val = ["--set", "data.val_fraction=0.1", "--set", "search.batch_size=200"]  # val: 144, train: 1294
    line = _refused(capsys, ["validate", DEFAULT, *small_val])
    assert "search.batch_size: 200 is larger than search-val (144 examples)" in line
    # A baseline trains on search-train only and evaluates search-val in chunks: it runs.
    assert main(["validate", BASELINE, *small_val]) == 0


# --------------------------------------------------------------------------------- no Ray: memory


def test_validate_refuses_a_supernet_too_large_for_this_machine(capsys):
    line = _refused(capsys, ["validate", DEFAULT, "--set", "space.channels=1000000000000"])
    assert line.startswith("raysearch: error: space.channels: the supernet needs more than ~")
    assert "TB" in line and "a worker has at most" in line


def test_a_batch_too_large_for_the_memory_names_the_batch_and_what_fits(capsys, monkeypatch):
    memory = check_config(load_config(DEFAULT))
    monkeypatch.setattr(preflight, "_physical_memory", lambda: memory.total(8))  # 8 examples fit, 64 do not
    line = _refused(capsys, ["validate", DEFAULT])
    assert "search.batch_size: the supernet needs ~" in line and "at 64 examples per worker" in line
    assert "at most 8 examples per worker fit" in line
    # Sharding the batch over 8 workers would fit one worker, but they share this machine's memory.
    assert "shared by 8 workers" in _refused(capsys, ["validate", DEFAULT, "--set", "ray.workers=8"])


def test_a_space_too_large_even_for_one_example_names_the_space(monkeypatch):
    config = load_config(DEFAULT)
    memory = check_config(config)
    monkeypatch.setattr(preflight, "_physical_memory", lambda: memory.total(0) + memory.per_example // 2)
    with pytest.raises(ConfigError, match=r"^space\.\w+: the supernet needs ~.* activations ~"):
        check_config(config)


def test_a_space_that_overflows_even_on_the_meta_device_is_a_config_error():
    # With a cluster address, memory is compared after ray.init, but the space must still be buildable.
    config = load_config(DEFAULT, ["space.channels=100000000000000000"])
    with pytest.raises(ConfigError, match=r"^space\.channels: this nb201 space cannot be built \(.*overflow"):
        check_config(config, address="auto")


def test_a_space_too_deep_to_build_is_refused_without_building_it(monkeypatch):
    monkeypatch.setattr(mem, "MAX_MODULES", 500)  # the real cap is 50,000: same path, less time
    config = load_config(DEFAULT, ["space.cells_per_stage=50"])
    with pytest.raises(ConfigError, match=r"^space\.cells_per_stage: this nb201 space is too large to build "
                                          r"\(it has more than 500 modules\)"):
        check_config(config)


def test_a_sweep_is_checked_for_every_value_it_can_give_a_search(monkeypatch):
    """The base search fits; a swept batch or channel count that does not is refused, naming the value."""
    sweep = {"num_samples": 2, "params": {"search.batch_size": {"choice": [32, 100000]}}}
    config = tiny_config(sweep=sweep)
    with pytest.raises(ConfigError, match=r"^sweep\.params\.search\.batch_size = 100000: search\.batch_size: "
                                          r"100000 is larger than search-train \(\d+ examples\)"):
        check_config(config)
    base = check_config(tiny_config())
    monkeypatch.setattr(preflight, "_physical_memory", lambda: 2 * base.total())
    config = tiny_config(sweep={"num_samples": 2, "params": {"space.channels": {"randint": [4, 64]}}})
    with pytest.raises(ConfigError, match=r"^sweep\.params\.space\.channels = 64: search\.batch_size: the supernet "
                                          r"needs ~"):
        check_config(config)
    view = ClusterView((_node(4, memory=2 * base.total()),))
    with pytest.raises(ConfigError, match=r"^sweep\.params\.space\.channels = 64: search\.batch_size: .*Ray memory"):
        check_cluster(config, view)
    assert check_config(tiny_config(sweep={"num_samples": 2, "params": {"space.channels": {"randint": [4, 5]}}}))


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_passes_the_ray_free_checks(path, tmp_path):
    config = load_config(path)
    if config.data.dataset.startswith("cifar") and config.data.root is None:  # a GPU config: data on its disk
        write_cifar(tmp_path, config.data.dataset, n_train=200)
        config = load_config(path, [f"data.root={tmp_path}"])
    memory = check_config(config)
    limit = 2 * GB if config.data.dataset.startswith("digits") else 16 * GB  # a laptop / one GPU
    assert memory.complete and 0 < memory.total() < limit


def test_the_estimate_matches_the_bytes_a_real_step_saves():
    from raysearch.data import load_splits
    from raysearch.spaces import build_space

    config = tiny_config()
    memory = mem.estimate_step_memory(config)
    splits = load_splits(config.data)
    space = build_space(config.space, splits.shape)
    net = space.supernet()
    x = splits.train[0][: config.search.batch_size]
    mix = {k: torch.full(s, 1 / s[1], requires_grad=True) for k, s in space.encoding_shapes().items()}
    real = mem.saved_tensor_bytes(lambda: net(x, mix, None))
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    estimated = memory.fixed + memory.per_example * memory.batch
    assert memory.parameters == weights
    assert 0.8 * real <= estimated <= 1.2 * real, (estimated, real)  # real also counts the saved weights


def test_large_models_are_measured_on_the_meta_device_with_the_same_result(monkeypatch):
    config = tiny_config()
    on_cpu = mem._estimate(config, None)
    monkeypatch.setattr(mem, "REAL_FORWARD_BYTES", 0)  # as for a model of more than 256 MiB
    assert mem._estimate(config, None) == on_cpu


def test_run_and_resume_refuse_before_ray_starts_or_a_run_directory_is_made(capsys, tmp_path):
    import ray

    run_dir = tmp_path / "run"
    line = _refused(capsys, ["run", DEFAULT, "--set", "search.batch_size=5000", "--output-dir", str(run_dir)])
    assert "search.batch_size: 5000 is larger than search-train" in line
    assert not run_dir.exists() and not ray.is_initialized()
    # resume re-checks the stored config (here one written with a batch the data cannot give)
    run_dir.mkdir()
    bad = load_config(DEFAULT, ["search.batch_size=5000"])
    (run_dir / "config.yaml").write_text(bad.to_yaml())
    (run_dir / "run.json").write_text(json.dumps({"run_id": "x", "tracking_uri": None, "mlflow_experiment_id": None,
                                                 "mlflow_parent_run_id": None}))
    assert "search.batch_size: 5000" in _refused(capsys, ["resume", str(run_dir)])
    assert not ray.is_initialized()


# ------------------------------------------------------------------ cluster decisions on fake views


def _node(cpus, gpus=0, memory=64 * GB):
    return {"CPU": float(cpus), "GPU": float(gpus), "memory": float(memory)}


def _config(**ray):
    return tiny_config(ray=ray)


def test_a_gpu_bundle_is_refused_on_cpu_nodes_and_accepted_when_the_autoscaler_can_add_a_gpu_node():
    config = _config(gpus_per_trial=1)
    cpu_only = ClusterView((_node(4),))
    with pytest.raises(ConfigError, match=r"^ray\.gpus_per_trial: a trial needs 1 GPU; no node has a GPU$"):
        check_resources(config, cpu_only)
    gpu_type = NodeType("gpu_worker", {"CPU": 4.0, "GPU": 1.0}, 4)
    check_resources(config, ClusterView((_node(4),), (gpu_type,), autoscaler=True))
    with pytest.raises(ConfigError, match=r"^ray\.gpus_per_trial: a trial needs 2 GPUs; the largest node the "
                                          r"autoscaler can add or the cluster has has 1"):
        check_resources(_config(gpus_per_trial=2), ClusterView((_node(4),), (gpu_type,), autoscaler=True))


def test_an_autoscaler_with_unknown_node_types_is_trusted_with_a_warning():
    warnings = []
    check_resources(_config(gpus_per_trial=1), ClusterView((_node(4),), (), autoscaler=True), warnings.append)
    assert len(warnings) == 1 and "autoscaler" in warnings[0]


def test_cpus_and_gpus_must_fit_on_the_same_node():
    view = ClusterView((_node(16), _node(2, gpus=1)))
    with pytest.raises(ConfigError, match=r"^ray\.cpus_per_trial: a trial needs 8 CPUs and 1 GPU on one node; "
                                          r"no node has both"):
        check_resources(_config(cpus_per_trial=8, gpus_per_trial=1), view)


def test_sharded_workers_that_fit_alone_must_fit_together():
    view = ClusterView((_node(2, gpus=2), _node(2, gpus=2)))
    config = _config(workers=4, cpus_per_worker=1.5, gpus_per_worker=1)
    with pytest.raises(ConfigError, match=r"^ray\.workers: a search's workers need 4 x 1\.5 = 6 CPUs"):
        check_resources(config, view)
    check_resources(_config(workers=4, cpus_per_worker=1, gpus_per_worker=1), view)  # the trial reserves none
    # Nodes the autoscaler can add count toward the total.
    more = NodeType("gpu_worker", {"CPU": 2.0, "GPU": 2.0}, 1)
    check_resources(config, ClusterView(view.nodes, (more,), autoscaler=True))


def test_the_cluster_memory_check_uses_the_largest_node_that_can_host_a_worker():
    config = _config(workers=2, cpus_per_worker=1, gpus_per_worker=1)
    memory = mem.estimate_step_memory(config)
    # The CPU node has plenty of memory but cannot host a GPU worker; the GPU nodes have too little.
    view = ClusterView((_node(8, memory=1000 * GB), _node(4, 1, memory.total(1)), _node(4, 1, memory.total(1))))
    with pytest.raises(ConfigError, match=r"^search\.batch_size: the supernet needs .* at 32 examples per worker"):
        check_cluster(config, view)
    check_cluster(config, ClusterView(view.nodes, (NodeType("big", {"CPU": 4.0, "GPU": 1.0}, 1),), True))


# --------------------------------------------------------------------------------- a real local Ray


def test_the_cluster_check_on_a_two_cpu_ray(ray_session, tmp_path):
    view = preflight.cluster_view()
    assert len(view.nodes) == 1 and view.nodes[0]["CPU"] == 2
    assert not view.autoscaler  # a local Ray's monitor only mirrors its node: nothing can be added
    with pytest.raises(ConfigError, match=r"^ray\.cpus_per_trial: a trial needs 3 CPUs; the largest node has 2 "
                                          r"\(cluster total 2\)$"):
        check_cluster(_config(cpus_per_trial=3))
    with pytest.raises(ConfigError, match=r"^ray\.gpus_per_trial: a trial needs 1 GPU; no node has a GPU$"):
        check_cluster(_config(gpus_per_trial=1))
    with pytest.raises(ConfigError, match=r"^ray\.workers: a search's workers need 2 x 1\.5 = 3 CPUs"):
        check_cluster(_config(workers=2, cpus_per_worker=1.5))
    check_cluster(_config())
    check_cluster(_config(workers=2, cpus_per_worker=1))  # a sharded search's trial reserves no CPU

    # On the head of a launcher cluster, the node types of its autoscaling config are readable.
    from ray.autoscaler._private.util import prepare_config

    bootstrap = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps(bootstrap))  # `ray up` writes it as JSON
    types = preflight._types_from_launcher_config(path)
    assert [t.name for t in types] == ["gpu_worker"] and types[0].resources["GPU"] >= 1
    check_cluster(_config(gpus_per_trial=1), ClusterView(view.nodes, tuple(types), autoscaler=True))


def test_a_run_that_no_node_can_host_exits_2_before_any_tune_experiment(ray_session, capsys, tmp_path, monkeypatch):
    from raysearch import phases

    def no_tune(*args, **kwargs):
        raise AssertionError("a Tune experiment started")

    monkeypatch.setattr(phases, "fit", no_tune)
    line = _refused(capsys, ["run", DEFAULT, "--set", "ray.cpus_per_trial=100000", "--set", "search.epochs=1",
                             "--output-dir", str(tmp_path / "run")])
    assert "ray.cpus_per_trial: a trial needs 100000 CPUs; the largest node has 2 (cluster total 2)" in line
    assert not (tmp_path / "run" / "ray").exists()  # no Tune storage
