"""MLflow at the edge: one parent run per experiment, one child run per trial.

MLflow must never fail or hang a search. Remote servers are probed first with
a short timeout, every request has bounded retries and timeout, and the first
failure switches tracking off for the rest of the run with one warning; the
run's results are still written to the run directory.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
import urllib.parse
import warnings
from pathlib import Path

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"  # what MLflow 3.17 reads
# MLflow 3.17's UI, opening an experiment for the first time in a browser, unfolds the parents of the runs of
# this type (and of no others): the experiment's runs table lands with the parent's child runs under it.
RUN_TYPE, UNFOLDED = "mlflow.runType", "evaluation"
_MAX_PARAM_CHARS = 500  # longer values (e.g. per-step lr lists) go to artifacts instead
_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def adopt_credentials(uri: str | None) -> str | None:
    """`uri` without the user and password of `http://user:password@host`, which become this process's
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (MLflow's client reads them on every request):
    raysearch writes and prints only the URI it returns, and the Tracker it pickles into Tune's state
    holds no secret. The driver makes every MLflow call; a local Ray's processes do not inherit the
    password (raysearch.ray_session)."""
    if not uri:
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username or "")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password or "")
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} of strings, dropping values too long for a param."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            text = str(value)
            if len(text) <= _MAX_PARAM_CHARS:
                out[name] = text
    return out


def _reachable(uri: str, timeout: float) -> str | None:
    """None if a remote tracking server accepts a connection, else why not."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except OSError as err:
        return f"cannot connect to {parsed.hostname}:{port} ({err})"


class Tracker:
    """Bounded, failure-tolerant MLflow logging; picklable (Tune pickles callbacks)."""

    def __init__(self, uri: str, experiment: str, timeout_s: float = 5.0, retries: int = 1,
                 artifact_location: str | None = None):
        self.uri, self.experiment, self.timeout_s, self.retries = uri, experiment, timeout_s, retries
        self.artifact_location = artifact_location
        self.enabled = True
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.unfold = True  # the parent's children show under it in MLflow's UI (a nested tracker's stay folded)
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    # -- plumbing -------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            # Bound every HTTP request before mlflow reads the settings.
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(self.timeout_s)))
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.retries)
            os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)  # else the registry is the cwd's
        return self._client

    def disable(self, reason: str) -> None:
        if self.enabled:
            warnings.warn(f"MLflow tracking at {self.uri} is off for the rest of this run: {reason}. "
                          "Results are still written to the run directory.", RuntimeWarning, stacklevel=3)
        self.enabled = False

    def _call(self, what: str, fn, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any MLflow failure degrades to a warning
            self.disable(f"{what} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            return None

    # -- experiment and runs -----------------------------------------------------------
    def _probe(self) -> bool:
        """Whether a remote server accepts connections; tracking is off for the run if not."""
        problem = _reachable(self.uri, self.timeout_s)
        if problem:
            self.disable(problem)
        return self.enabled

    def start(self, run_name: str, params: dict[str, str]) -> "Tracker":
        """Probe the server, create the experiment if needed and open the parent run."""
        if not self._probe():
            return self
        exp = self._call("get experiment", self.client.get_experiment_by_name, self.experiment)
        if self.enabled:
            # MLflow 3's UI opens an experiment without this tag in its GenAI view (traces), not its runs
            self.experiment_id = exp.experiment_id if exp else self._call(
                "create experiment", self.client.create_experiment, self.experiment,
                artifact_location=self.artifact_location, tags={EXPERIMENT_KIND: MODEL_TRAINING})
        run = self._call("create parent run", self.client.create_run, self.experiment_id, run_name=run_name)
        if run is not None:
            self.parent_run_id = run.info.run_id
            self.log_params(self.parent_run_id, params)
        return self

    def reopen(self, experiment_id: str | None, parent_run_id: str | None) -> "Tracker":
        """Continue an earlier run's parent run (for `raysearch resume`)."""
        if parent_run_id is None:
            self.disable("the interrupted run had no MLflow run to continue")
        elif self._probe():
            self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
            self._call("reopen parent run", self.client.update_run, parent_run_id, status="RUNNING")
        return self

    def set_experiment_tag(self, key: str, value: str) -> None:
        if self.enabled and self.experiment_id is not None:
            self._call("set experiment tag", self.client.set_experiment_tag, self.experiment_id, key, value)

    def find_child(self, tags: dict[str, str]) -> str | None:
        """The id of the parent's child run carrying all `tags`, if there is one."""
        if not self.enabled or self.parent_run_id is None:
            return None
        query = " and ".join([f"tags.mlflow.parentRunId = '{self.parent_run_id}'"]
                             + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
        runs = self._call("search runs", self.client.search_runs, [self.experiment_id], query, max_results=1)
        return runs[0].info.run_id if runs else None

    def start_child(self, run_name: str, params: dict[str, str], tags: dict[str, str] | None = None) -> str | None:
        if not self.enabled or self.parent_run_id is None:
            return None
        tags = {"mlflow.parentRunId": self.parent_run_id, **({RUN_TYPE: UNFOLDED} if self.unfold else {}), **(tags or {})}
        run = self._call("create child run", self.client.create_run, self.experiment_id,
                         run_name=run_name, tags=tags)
        if run is None:
            return None
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def nested(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> "Tracker":
        """A tracker whose parent run is a new child run of this one's, so its children nest a level deeper
        (a comparison's method x seed runs, under which their trials' runs go, folded)."""
        child = copy.copy(self)
        child.parent_run_id, child.unfold = self.start_child(run_name, params, tags), False
        return child

    def delete_tree(self, run_id: str | None) -> None:
        """Delete a run and its child runs (an interrupted attempt that is run again)."""
        if run_id is None or not self.enabled:
            return
        query = f"tags.mlflow.parentRunId = '{run_id}'"
        for run in self._call("search runs", self.client.search_runs, [self.experiment_id], query) or []:
            self._call("delete run", self.client.delete_run, run.info.run_id)
        self._call("delete run", self.client.delete_run, run_id)

    def log_params(self, run_id: str | None, params: dict[str, str]) -> None:
        if run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), _PARAMS_PER_CALL):
            self._call("log params", self.client.log_batch, run_id, params=items[start : start + _PARAMS_PER_CALL])

    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int) -> None:
        if run_id is None or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._call("log metrics", self.client.log_batch, run_id, metrics=batch)

    def last_step(self, run_id: str | None, key: str) -> int:
        """The highest step at which metric `key` was logged to `run_id` (0: never)."""
        if run_id is None:
            return 0
        history = self._call("metric history", self.client.get_metric_history, run_id, key) or []
        return max((int(m.step) for m in history), default=0)

    def log_artifacts(self, run_id: str | None, paths) -> None:
        if run_id is None:
            return
        for path in paths:
            self._call("log artifact", self.client.log_artifact, run_id, str(path))

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None:
            self._call("end run", self.client.set_terminated, run_id, status)

    def end_open_children(self, status: str) -> None:
        """End child runs still RUNNING (their trial was interrupted) with `status`."""
        if not self.enabled or self.parent_run_id is None:
            return
        query = f"tags.mlflow.parentRunId = '{self.parent_run_id}' and attributes.status = 'RUNNING'"
        for run in self._call("search runs", self.client.search_runs, [self.experiment_id], query) or []:
            self.end(run.info.run_id, status)

    # -- the model ---------------------------------------------------------------------------
    def log_model(self, run_id: str | None, folder: Path, register: str | None = None,
                  tags: dict[str, str] | None = None) -> dict:
        """Log the model folder's network to `run_id` as an MLflow model (`mlflow.pyfunc.load_model(uri)
        .predict(batch)` gives class scores) once, and with `register` make it a version of that registered
        model once, tagged with the card's genotype, dataset, space and test accuracy plus `tags`: a resumed
        run logs and registers nothing twice. Returns {"uri", "version"} (None: not logged or not
        registered)."""
        out = {"uri": None, "version": None}
        if run_id is None or not self.enabled:
            return out
        logged = self._call("search logged models", self.client.search_logged_models, [self.experiment_id],
                            f"source_run_id = '{run_id}'")
        if logged is None:
            return out
        from mlflow.entities import LoggedModelStatus

        logged = [m for m in logged if m.status == LoggedModelStatus.READY]  # not one a failure cut short
        out["uri"] = f"models:/{logged[0].model_id}" if logged else self._call(
            "log model", self._log_pytorch_model, run_id, folder)
        if out["uri"] is not None and register:
            out["version"] = self._call("register model", self._register, register, out["uri"], run_id, folder,
                                        tags or {})
        return out

    def _register(self, name: str, uri: str, run_id: str, folder: Path, extra: dict[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        from raysearch.model import read_card

        found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            return str(found[0].version)
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        card = read_card(folder)
        tags = {"genotype": card.genotype, "dataset": card.dataset, "space": card.space["name"],
                "test_accuracy": "-" if card.test_accuracy is None else f"{card.test_accuracy:.6g}", **extra}
        with _global_uri(self.uri):  # the registry resolves a models:/ source through the global URI
            version = self.client.create_model_version(name, uri, run_id=run_id, tags=tags,
                                                       model_id=uri.removeprefix("models:/"))
        return str(version.version)

    def _log_pytorch_model(self, run_id: str, folder: Path) -> str:
        """`mlflow.pytorch.log_model` of a model folder's network, in MLflow's `pt2` format (torch.export's
        graph: loading it runs no pickled code), with its signature [-1, C, H, W] -> [-1, classes] and an
        input example; returns the logged model's URI."""
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from raysearch.export import example_input
        from raysearch.model import read_model

        module, card, _ = read_model(folder)
        image = (-1, card.in_channels, card.image_size, card.image_size)
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), image)]),
                                   outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(card.classes)))]))
        metadata = {"raysearch": {k: v for k, v in json.loads(card.to_json()).items() if k != "hparams"}}
        # created here, in the run's experiment: log_model alone would put it in the global default experiment
        model = self.client.create_logged_model(self.experiment_id, "model", source_run_id=run_id)
        with _global_uri(self.uri):
            info = mlflow.pytorch.log_model(
                module, name="model", signature=signature, input_example=example_input(card).numpy(),
                serialization_format="pt2", pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                metadata=metadata, run_id=run_id, model_id=model.model_id)
        return info.model_uri


def _global_uri(uri: str):
    """MLflow's global tracking URI set to `uri` for a `with` block (the fluent API and the registry's
    resolution of models:/ URIs read it; raysearch's own calls name their store), then restored."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # private, and exactly this

    return _use_tracking_uri(uri)
