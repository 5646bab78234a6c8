"""Helpers several test modules share (fixtures and small configs are in conftest.py)."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml
from ray import tune

ROOT = Path(__file__).resolve().parents[1]
# the shipped experiment configs (a comparison config names `methods:`; tests/test_compare.py loads those)
EXPERIMENT_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "methods" not in yaml.safe_load(p.read_text()))


def free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, cwd, env: dict | None = None):
    """`raysearch ARGS` in a subprocess, with no standard input, bounded in time; `env` changes this process's
    environment for it (a value None removes the variable)."""
    changed = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "raysearch.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={k: v for k, v in changed.items() if v is not None}, timeout=600,
                          stdin=subprocess.DEVNULL)


def assert_pyfunc_predicts(tracking_uri: str, model_uri: str, loaded, images) -> None:
    """mlflow.pyfunc loads `model_uri` (a models:/ URI of the tracking server or store) and its predictions on
    `images` are the loaded model's logits."""
    import mlflow.pyfunc
    import torch
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):  # models:/ URIs resolve through MLflow's global tracking URI
        predicted = mlflow.pyfunc.load_model(model_uri).predict(images.numpy())
    with torch.no_grad():
        expected = loaded.module(images)
    assert predicted.shape == (len(images), len(loaded.card.classes))
    assert torch.allclose(torch.from_numpy(predicted), expected, atol=1e-5)


# secrets a test hands raysearch (a password in the tracking URI, a Ray token): none may appear in what it writes
SENTINELS = {"password": "pw-0f5e2a91c4d7-sentinel", "token": "tok-7c3b81e65a02-sentinel"}


def assert_no_secret(console: str, *folders: Path) -> None:
    """No sentinel secret in the console output or in any file under `folders` (bytes, whatever the
    format: JSON, YAML, Parquet, pickles, SQLite)."""
    for name, secret in SENTINELS.items():
        assert secret not in console, f"the {name} is on the console"
        for folder in folders:
            leaks = [p for p in Path(folder).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
            assert not leaks, f"the {name} is in {leaks}"


def wait_for_port(port: int, process: subprocess.Popen, why, seconds: float = 120) -> None:
    """Until something listens on 127.0.0.1:`port`; fails with why() if `process` ends or time runs out."""
    deadline = time.monotonic() + seconds
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert process.poll() is None and time.monotonic() < deadline, why()
        time.sleep(0.5)


@contextmanager
def serve_mlflow(folder: Path, *args: str, env: dict | None = None):
    """A real MLflow tracking server on 127.0.0.1 with a SQLite store in `folder` (`args`: more options,
    e.g. --app-name basic-auth), stopped by its PID (its process group) afterwards. Yields (url, folder)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                                   "--artifacts-destination", str(folder / "artifacts"), *args], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, server, lambda: (folder / "server.log").read_text()[-2000:])
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", folder=folder)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


class KillOnce(tune.Callback):
    """SIGKILLs the trial's process once Tune has registered its checkpoint of epoch `at` (once)."""

    def __init__(self, at: int, marker):
        self.at, self.marker, self.pid, self.epoch = at, str(marker), None, None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.pid, self.epoch = result["pid"], result["training_iteration"]

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.epoch == self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(self.pid, signal.SIGKILL)


def write_cifar(root, name, n_train=20, n_test=10):
    """Random images in the on-disk format of the official CIFAR "python version" archives, under `root`."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels", 10
        test_name = "test_batch"
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train"], "fine_labels", 100
        test_name = "test"
    folder.mkdir(parents=True)
    for name_, n in [(f, n_train) for f in files] + [(test_name, n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: rng.integers(0, classes, n).tolist()}
        with open(folder / name_, "wb") as f:
            pickle.dump(batch, f)
