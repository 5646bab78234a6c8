"""End-to-end runs through Ray Tune: files, MLflow runs, failures, resume, and the CLI."""

import json
import os
import signal
import subprocess
import sys
import warnings

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

import raysearch
from raysearch.ray_session import start_ray, stop_ray
from raysearch.search import SearchLoop
from tests.conftest import TINY, tiny_config
from tests.helpers import KillOnce, assert_pyfunc_predicts, free_port
from tests.helpers import cli as _cli
from trainables.common import set_up_trial

SUMMARY_KEYS = {"experiment", "algorithm", "space", "dataset", "genotype", "hparams", "search_seconds",
                "retrain_seconds", "val_accuracy", "test_accuracy", "mlflow_experiment_id", "mlflow_parent_run_id"}


def test_run_writes_results_and_nested_mlflow_runs(tmp_path, ray_session):
    summary = raysearch.run(tiny_config(tracking={"register_model": "tiny-cell"}), output_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(saved)
    assert saved["genotype"] == summary.genotype and 0.0 <= saved["test_accuracy"] <= 1.0
    assert len(saved["hparams"]["lr"]) == 2 * (1078 // 64)  # epochs x steps over search-train

    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert [r["role"] for r in rows] == ["search", "retrain"]
    assert all(r["status"] == "TERMINATED" for r in rows)
    assert rows[1]["test_accuracy"] == summary.test_accuracy

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    parent = client.get_run(summary.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["search.algorithm"] == "autohas"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"config.yaml", "summary.json",
                                                                          "results.parquet"}
    children = client.search_runs([summary.mlflow_experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_role = {r.data.tags["raysearch.role"]: r for r in children}
    assert set(by_role) == {"search", "retrain"}
    search = by_role["search"]
    assert search.data.params["experiment.search.epochs"] == "2"
    assert len(client.get_metric_history(search.info.run_id, "derived_val_acc")) == 2
    assert {"arch_entropy", "lr_factor", "weight_decay", "train_loss"} <= set(search.data.metrics)
    assert {a.path for a in client.list_artifacts(search.info.run_id)} == {
        "config.yaml", "genotype.json", "hparams.json", "encodings.json", "encodings.png", "lr_schedule.png"}
    assert len(client.get_metric_history(by_role["retrain"].info.run_id, "test_acc")) == 1
    _check_model(run_dir, summary, client, by_role["retrain"].info.run_id)


def _check_model(run_dir, summary, client, producer: str) -> None:
    """The run ends with one model: loaded, it tests as reported; MLflow holds it once, logged to the run
    that trained it, registered once, and mlflow.pyfunc predicts its logits."""
    from raysearch.data import load_splits
    from raysearch.training import accuracy

    loaded = raysearch.load_model(run_dir)
    module, card, folder = loaded
    splits = load_splits(raysearch.load_config(run_dir / "config.yaml").data)
    assert accuracy(module, *splits.test, torch.device("cpu"))[1] == summary.test_accuracy == card.test_accuracy
    assert card.genotype == summary.genotype and summary.model["path"] == str(folder)
    logged = client.search_logged_models([summary.mlflow_experiment_id])
    assert [m.source_run_id for m in logged] == [producer]
    assert summary.model["mlflow_uri"] == f"models:/{logged[0].model_id}"
    assert {"model_params", "model_flops", "latency_batch_1_ms", "latency_batch_64_ms"} <= set(
        client.get_run(producer).data.metrics)
    versions = client.search_model_versions("name = 'tiny-cell'")
    assert [v.version for v in versions] == [1] and versions[0].tags["genotype"] == card.genotype
    assert summary.model["registered_version"] == "1"
    assert_pyfunc_predicts(client.tracking_uri, summary.model["mlflow_uri"], loaded, splits.test[0][:6])


def test_unreachable_tracking_uri_does_not_fail_the_run(tmp_path, ray_session):
    config = tiny_config(tracking={"timeout_s": 1, "retries": 0, "register_model": "never-registered"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = raysearch.run(config, output_dir=tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert any("MLflow tracking" in str(w.message) for w in caught)
    assert summary.mlflow_parent_run_id is None
    assert json.loads((tmp_path / "summary.json").read_text())["genotype"] == summary.genotype
    assert (tmp_path / "results.parquet").exists()
    # the model is written as ever, with no MLflow model to point to
    assert summary.model["mlflow_uri"] is None and summary.model["registered_version"] is None
    assert raysearch.load_model(tmp_path).card.test_accuracy == summary.test_accuracy


def test_killed_search_trial_resumes_from_its_checkpoint(tmp_path, ray_session, digits):
    from raysearch.phases import fit
    from trainables.common import STATE_FILE
    from trainables.search import search_trainable

    config = tiny_config(search={"epochs": 3}, ray={"max_failures": 1})
    seen = []

    class Record(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append(result["epoch"])

    result = fit(search_trainable, {"experiment": config.to_dict()}, "search", str(tmp_path), config,
                 [KillOnce(2, tmp_path / "killed"), Record()])[0]
    assert (tmp_path / "killed").exists() and result.error is None
    assert seen == [1, 2, 3]  # epoch 3 ran once, after the restart, from the epoch-2 checkpoint

    # Ray gives a 1-CPU trial one intra-op thread; CPU float sums depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = SearchLoop.from_config(config, digits)
        for _ in range(3):
            straight.run_epoch()
    finally:
        torch.set_num_threads(threads)
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), weights_only=True)
    for name, tensor in straight.algorithm.enc.state_dict().items():
        assert torch.equal(state["algorithm"]["encodings"][name], tensor), name


def test_diverging_search_fails_with_its_reason(tmp_path, ray_session):
    config = tiny_config(training={"lr": 1e30, "grad_clip": None}, ray={"max_failures": 0})
    with pytest.raises(raysearch.runner.RunFailed, match="diverged"):
        raysearch.run(config, output_dir=tmp_path)
    row = pq.read_table(tmp_path / "results.parquet").to_pylist()[0]
    assert row["status"] == "ERROR" and "diverged" in row["error"]


def test_cli_run_end_to_end(tmp_path):
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = _cli("run", "tiny.yaml", "--set", "search.epochs=1", "--output-dir", "out", "--register-model", "cli-cell",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(registered version 1)" in proc.stdout
    assert "[search 1/1]" in proc.stdout and "[retrain 1/1]" in proc.stdout
    assert "test accuracy (retrained)" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["experiment"] == "tiny" and len(summary["hparams"]["lr"]) == 1078 // 64
    assert proc.stdout.rstrip().splitlines()[-1].split() == ["model", str(tmp_path / "out" / "model")]
    evaluated = _cli("evaluate", "out", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"accuracy {summary['test_accuracy']:.4f}" in evaluated.stdout
    assert (tmp_path / "out" / "evaluation" / "confusion_matrix.png").stat().st_size > 0
    missing = _cli("export", ".", "--format", "onnx", cwd=tmp_path)
    assert missing.returncode == 2 and "not a raysearch run directory" in missing.stderr

    # `report` prints the summary again from the files, after a table of the trials, and redraws the plots
    plots = [tmp_path / "out" / "artifacts" / name for name in ("encodings.png", "lr_schedule.png")]
    for plot in plots:
        plot.unlink()
    report = _cli("report", "out", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    trials, printed = report.stdout.rstrip("\n").split("\n\n")
    assert proc.stdout.rstrip("\n").endswith("\n" + printed)  # byte for byte what `run` printed last
    assert [line.split()[0] for line in trials.splitlines()] == ["role", "search", "retrain"]
    assert all(plot.stat().st_size > 5000 for plot in plots)


def test_cli_rejects_missing_data_before_starting_ray(tmp_path):
    proc = _cli("run", str(raysearch.config.Path(__file__).parents[1] / "configs" / "autohas_nb201_digits.yaml"),
                "--set", "data.dataset=cifar10", "--set", f"data.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "cifar-10-batches-py" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def _write_slow_config(tmp_path, search: int = 30, retrain: int = 1) -> str:
    """A TINY run of `search` and `retrain` epochs, so there is time to stop it."""
    import yaml

    config = {**TINY, "search": {**TINY["search"], "epochs": search}, "retrain": {"epochs": retrain}}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(config))
    return "slow.yaml"


def _start_and_stop_at(tmp_path, config: str, line_prefix: str, stop, after: int = 1):
    """Start `raysearch run CONFIG` and call `stop(driver)` once it has printed `after` lines
    starting with `line_prefix`."""
    import threading

    driver = subprocess.Popen([sys.executable, "-m", "raysearch.cli", "run", config, "--output-dir", "out"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    watchdog = threading.Timer(300, lambda: os.killpg(driver.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in driver.stdout:
            after -= line.startswith(line_prefix)
            if after == 0:
                stop(driver)
                break
        driver.wait(timeout=120)
    finally:
        watchdog.cancel()
        try:  # Ray's processes can outlive a killed driver; they share its process group
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return driver, driver.stderr.read(), tmp_path / "out"


def _resume_and_check(tmp_path, run_dir):
    parent = json.loads((run_dir / "run.json").read_text())["mlflow_parent_run_id"]
    proc = _cli("resume", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = next(line for line in proc.stdout.splitlines() if line.startswith("[search "))
    assert not first.startswith("[search 1/30]"), first  # continued, not restarted
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mlflow_parent_run_id"] == parent and len(summary["hparams"]["lr"]) == 30 * (1078 // 64)
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    children = client.search_runs([summary["mlflow_experiment_id"]], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["raysearch.role"] for r in children) == ["retrain", "search"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert client.get_run(parent).info.status == "FINISHED"
    return proc


def test_resume_after_the_driver_is_killed(tmp_path):
    """kill -9 of `raysearch run` mid-search; `raysearch resume` continues from the last checkpoint."""
    driver, _, run_dir = _start_and_stop_at(tmp_path, _write_slow_config(tmp_path), "[search 3/30]",
                                            lambda d: os.killpg(d.pid, signal.SIGKILL))
    assert driver.returncode == -signal.SIGKILL and not (run_dir / "summary.json").exists()
    _resume_and_check(tmp_path, run_dir)

    again = _cli("resume", "out", cwd=tmp_path)  # a complete run is not run again
    assert again.returncode == 0 and "nothing to resume" in again.stdout
    rerun = _cli("run", "slow.yaml", "--output-dir", "out", cwd=tmp_path)
    assert rerun.returncode == 2 and "raysearch resume" in rerun.stderr


def test_ctrl_c_in_the_retraining_stops_with_exit_130_and_resume_ends_with_one_model(tmp_path):
    driver, stderr, run_dir = _start_and_stop_at(tmp_path, _write_slow_config(tmp_path, 2, 30), "[retrain 3/30]",
                                                 lambda d: os.kill(d.pid, signal.SIGINT))
    assert driver.returncode == 130, stderr[-3000:]
    assert "raysearch resume" in stderr and not (run_dir / "summary.json").exists()
    assert not (run_dir / "model").exists()
    parent = json.loads((run_dir / "run.json").read_text())["mlflow_parent_run_id"]
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    assert client.get_run(parent).info.status == "KILLED"
    proc = _cli("resume", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[search" not in proc.stdout and "[retrain 1/30]" not in proc.stdout  # continued, not restarted
    summary = raysearch.Summary(**json.loads((run_dir / "summary.json").read_text()))
    retrain = client.search_runs([summary.mlflow_experiment_id], "tags.`raysearch.role` = 'retrain'")
    assert len(retrain) == 1 and [p.name for p in run_dir.iterdir() if p.name.startswith(".model")] == []
    assert len(client.search_logged_models([summary.mlflow_experiment_id])) == 1
    assert summary.model["mlflow_uri"] and raysearch.load_model(run_dir).card.test_accuracy == summary.test_accuracy


def test_cli_errors_for_unreachable_ray_address_and_missing_run(tmp_path):
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = _cli("run", "tiny.yaml", "--address", f"127.0.0.1:{free_port()}", "--output-dir", "out", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot connect to the Ray cluster" in proc.stderr, proc.stderr[-2000:]
    missing = _cli("resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "holds no raysearch run" in missing.stderr


def _threads(config):
    set_up_trial()
    tune.report({"threads": torch.get_num_threads()})


def test_a_trial_computes_with_as_many_threads_as_it_has_cpus_on_a_private_authenticated_ray(tmp_path):
    """A 1-CPU trial on this 2-CPU machine: its process loaded torch (with the trainable's module) before
    Ray set OMP_NUM_THREADS, so without set_up_trial it computes with 2 threads, as does the trial
    beside it, and both run several times slower.

    The local Ray that raysearch starts is private, as read from the running cluster: every port its
    processes listen on is a loopback one, and its GCS refuses a client without the token."""
    import ray

    assert start_ray(tiny_config(ray={"num_cpus": 2}), None)
    try:
        gcs = ray.get_runtime_context().gcs_address
        listening = _listening()
        grid = tune.Tuner(tune.with_resources(_threads, {"cpu": 1}),
                          run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
        anonymous = _cli_python(f"from ray._raylet import GcsClient; GcsClient(address={gcs!r})",
                                RAY_AUTH_MODE="disabled", HOME=str(tmp_path))
    finally:
        stop_ray()
    assert grid[0].metrics["threads"] == 1
    assert gcs.startswith("127.0.0.1:") and len(listening) >= 3 and all(a.is_loopback for a in listening), listening
    assert anonymous.returncode != 0 and "AuthenticationError" in anonymous.stderr, anonymous.stderr[-2000:]


def _listening() -> list:
    """The addresses this process and its descendants (the local Ray's GCS, raylet, agents and workers)
    listen on, read from /proc."""
    import ipaddress

    pids, todo = {os.getpid()}, [os.getpid()]
    while todo:
        pid = todo.pop()
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                children = {int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()}
            except OSError:
                continue
            todo += children - pids
            pids |= children
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # a process that ended meanwhile
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    out = []
    for table, words in (("/proc/net/tcp", 1), ("/proc/net/tcp6", 4)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN; the address in little-endian 32-bit words
                raw = bytes.fromhex(fields[1].split(":")[0])
                address = ipaddress.ip_address(b"".join(raw[4 * w:4 * w + 4][::-1] for w in range(words)))
                out.append(getattr(address, "ipv4_mapped", None) or address)
    return out


def _cli_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, **env})
