"""Secure by default: Ray's token authentication on every cluster raysearch starts or joins, an
authenticated MLflow server, no secret in anything a run writes or prints, and state files that cannot
run code. (The local Ray's loopback binding and token are read from a running cluster in test_run.py.)"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from raysearch.schema import ConfigError
from tests.conftest import TINY, tiny_config
from tests.helpers import ROOT, SENTINELS, assert_no_secret, cli, free_port, serve_mlflow, wait_for_port, write_cifar

NO_TOKEN = {"RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None, "RAY_AUTH_MODE": None}
# the test's head runs in Ray's single-node mode, on 127.0.0.1 only: a driver joining it must be in that mode
# too (otherwise Ray rewrites 127.0.0.1 in the address to the machine's network address)
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# -- files that cannot run code ------------------------------------------------------------------------------

class _Exploit:
    """Unpickled, it would create `marker`: the stand-in for whatever code a crafted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _crafted_checkpoint(folder: Path, marker: Path):
    from trainables.common import STATE_FILE, read_state

    torch.save({"epoch": 3, "net": _Exploit(marker)}, folder / STATE_FILE)
    return lambda: read_state(folder)


def _crafted_searcher_state(folder: Path, marker: Path):
    from raysearch.baselines.rea import RegularizedEvolution
    from tests.test_rea import _joint

    torch.save({"rng": _Exploit(marker)}, folder / "searcher-state.pkl")
    searcher = RegularizedEvolution(_joint(), 4, 2, seed=0)
    return lambda: searcher.restore(str(folder / "searcher-state.pkl"))


def _crafted_cifar_batch(folder: Path, marker: Path):
    from raysearch.data.datasets import load_cifar

    write_cifar(folder, "cifar10")
    with open(folder / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Exploit(marker), "labels": [0]}, f)
    return lambda: load_cifar("cifar10", str(folder))


@pytest.mark.parametrize("craft", [_crafted_checkpoint, _crafted_searcher_state, _crafted_cifar_batch])
def test_a_crafted_state_or_data_file_is_refused_not_run(tmp_path, craft):
    """A trial's checkpoint, a searcher's saved state and a CIFAR batch may come from storage others write
    to; one carrying a pickled call is refused, and the call never runs. (A model file: test_model.py.)"""
    from raysearch.data.raw import DatasetNotFoundError

    marker = tmp_path / "code-ran"
    load = craft(tmp_path, marker)
    with pytest.raises((pickle.UnpicklingError, DatasetNotFoundError)) as err:
        load()
    assert not marker.exists()
    assert "open" in str(err.value)  # the error names what the file asked for


# -- credentials ----------------------------------------------------------------------------------------------

def test_a_password_in_a_config_is_refused_and_one_in_a_given_uri_leaves_the_uri(monkeypatch):
    from raysearch.tracking import adopt_credentials

    with pytest.raises(ConfigError, match="^tracking.uri: holds a password"):
        tiny_config(tracking={"uri": "http://me:secret@mlflow.example:5000"})
    assert tiny_config(tracking={"uri": "http://mlflow.example:5000"}).tracking.uri == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert adopt_credentials("https://me%40lab:p%3Ass@mlflow.example:5000/prefix") == "https://mlflow.example:5000/prefix"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "me@lab" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p:ss"
    assert adopt_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert adopt_credentials(None) is None


@pytest.fixture(scope="module")
def basic_auth_server(tmp_path_factory):
    """MLflow's authenticated server (the README's recipe): an admin password at first start, a user for
    the runs whose password is a sentinel secret."""
    folder = tmp_path_factory.mktemp("mlflow-auth")
    admin = ("admin", secrets.token_hex(12))
    (folder / "auth.ini").write_text(f"[mlflow]\ndefault_permission = READ\nadmin_username = {admin[0]}\n"
                                     f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                                     "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    with serve_mlflow(folder, "--app-name", "basic-auth", env=env) as server:
        _request(server.url, "/api/2.0/mlflow/users/create", admin,
                 {"username": "runner", "password": SENTINELS["password"]})
        server.admin = admin
        yield server


def _request(url: str, path: str, user: tuple[str, str] | None, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_runs_log_to_an_authenticated_mlflow_and_no_secret_lands_anywhere(basic_auth_server, tmp_path, command,
                                                                           monkeypatch):
    """An anonymous request is refused; a run (or sweep) given the runs' user in its tracking URI logs its
    whole tree there; neither that password nor the Ray token it ran with is in any file it wrote (nor the
    server's store), on its console, or in MLflow's params and tags."""
    from mlflow.tracking import MlflowClient

    server = basic_auth_server
    with pytest.raises(urllib.error.HTTPError) as refused:
        _request(server.url, "/api/2.0/mlflow/experiments/search?max_results=1", None)
    assert refused.value.code == 401
    config = tmp_path / "tiny.yaml"
    if command == "run":
        config.write_text(yaml.safe_dump({**TINY, "name": "tiny-auth-run"}))
        extra = []
    else:
        config = ROOT / "configs" / "sweep_autohas_digits.yaml"
        extra = ["--set", "search.epochs=2", "--set", "sweep.num_samples=2", "--set", "sweep.grace_period=1",
                 "--set", "space.channels=4", "--set", "space.cells_per_stage=1", "--set", "retrain.epochs=1"]
    uri = server.url.replace("http://", f"http://runner:{SENTINELS['password']}@")
    done = cli(command, str(config), "--output-dir", str(tmp_path / "out"), "--tracking-uri", uri, *extra,
               cwd=tmp_path, env={"RAY_AUTH_TOKEN": SENTINELS["token"], "RAY_AUTH_MODE": None})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["extra"]["tracking_uri"] == server.url and summary["model"]["mlflow_uri"]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin[1])
    client = MlflowClient(server.url)
    parent = client.get_run(summary["mlflow_parent_run_id"])
    children = client.search_runs([summary["mlflow_experiment_id"]],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["raysearch.role"] for r in children} == {"search", "retrain"}
    logged = [*parent.data.params.values(), *parent.data.tags.values()]
    logged += [v for r in children for v in (*r.data.params.values(), *r.data.tags.values())]
    assert_no_secret(done.stdout + done.stderr + "\n".join(logged), tmp_path / "out", server.folder)


# -- Ray token authentication on a cluster raysearch joins ------------------------------------------------

@pytest.fixture(scope="module")
def token_cluster():
    """`ray start --head` with token authentication on 127.0.0.1 (Ray's single-node mode), its token in a
    file of its own; stopped by its process group (the head and every process it started)."""
    folder = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))  # short: Ray's socket paths live under it
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in NO_TOKEN}, **LOOPBACK, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(folder)}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             f"--temp-dir={folder / 'ray'}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, head, lambda: "the Ray head did not start")
        yield f"127.0.0.1:{port}", token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # what `ray start` left of its group (GCS, raylet, agents)
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("given", ["none", "wrong"])
def test_joining_a_token_cluster_without_its_token_is_one_line_and_exit_2(token_cluster, tmp_path, given):
    address, _ = token_cluster
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**NO_TOKEN, **LOOPBACK, "HOME": str(tmp_path)} | ({"RAY_AUTH_TOKEN": "0" * 64} if given == "wrong" else {})
    started = time.monotonic()
    done = cli("run", "tiny.yaml", "--address", address, "--output-dir", "out", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - started < 60  # not Ray's minute of retries
    lines = [line for line in done.stderr.splitlines() if "raysearch" in line or "Ray" in line]  # not MLflow's set-up
    assert len(lines) == 1 and lines[0].startswith(f"raysearch: error: cannot connect to the Ray cluster: {address} "
                                                   "refused raysearch's authentication token; looked in $RAY_AUTH_TOKEN: "
                                                   f"{'set' if given == 'wrong' else 'not set'}; $RAY_AUTH_TOKEN_PATH: "
                                                   "not set; ~/.ray/auth_token: missing"), lines
    assert not (tmp_path / "out" / "ray").exists()  # no trial was started


def test_a_run_joins_a_token_cluster_with_the_token_from_ray_auth_token_path(token_cluster, tmp_path):
    address, token = token_cluster
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    done = cli("run", "tiny.yaml", "--address", address, "--output-dir", "out", cwd=tmp_path,
               env={**NO_TOKEN, **LOOPBACK, "HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(token)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["test_accuracy"] is not None
