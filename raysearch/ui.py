"""`raysearch ui RUN_DIR`: the MLflow UI over a run's (or a comparison's) own store, landing on its runs.

MLflow 3's UI opens an experiment in its GenAI view (traces, sessions) unless
the experiment says it holds model training: raysearch tags every experiment
it creates with `mlflow.experimentKind: custom_model_development`
(raysearch.tracking). Each run also stores a view of the runs table as an
experiment tag, in the form MLflow's own "share view" writes
(`mlflow.sharedViewState.<key>`): its summary metrics as columns. The printed
URL names the runs tab, that view and the `machine_learning` workflow.
MLflow takes no unfolded rows from a shared view; it unfolds, on a browser's
first visit to an experiment, the parents of runs whose `mlflow.runType` is
`evaluation`, which raysearch gives the parent run's direct children (a
comparison's method x seed runs, a run's or sweep's trials), so they land
under their parent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

STATE_FILES = ("run.json", "comparison.json")  # a run's or sweep's, a comparison's
_START_TIMEOUT_S = 60.0


class UiError(RuntimeError):
    """The run directory holds no run, or the UI did not start; the message says which."""


_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix of a shared runs-table view


def view_key(parent_run_id: str) -> str:
    return f"raysearch-{parent_run_id}"


def share_view(tracker, metrics: list[str]) -> None:
    """Store the runs-table view of the tracker's parent run: `metrics` as columns."""
    if tracker.parent_run_id is None:
        return
    state = {  # MLflow 3.17's runs-table state (its defaults, but for the columns)
        "selectedColumns": [f"metrics.`{m}`" for m in metrics], "columnOrder": [], "columnWidths": {},
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True, "groupBy": None,
        "groupsExpanded": {}, "autoRefreshEnabled": True,
        "orderByKey": "attributes.start_time", "orderByAsc": False, "searchFilter": "", "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
    }
    tracker.set_experiment_tag(_VIEW_TAG + view_key(tracker.parent_run_id), json.dumps(state))


def runs_url(base: str, experiment_id: str | None, parent_run_id: str | None = None) -> str:
    """The URL of the experiment's runs table (the training view, the run's stored view) at `base`."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments"
    view = f"viewStateShareKey={view_key(parent_run_id)}&" if parent_run_id else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{view}workflowType=machine_learning"


def read_state(run_dir: Path) -> dict:
    """The run directory's tracking URI (None: its own store), MLflow experiment and parent run ids."""
    for name in STATE_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            state = json.loads(path.read_text())
            return {"tracking_uri": state.get("tracking_uri"), "experiment_id": state.get("mlflow_experiment_id"),
                    "parent_run_id": state.get("mlflow_parent_run_id")}
    raise UiError(f"{run_dir} holds no raysearch run ({' or '.join(STATE_FILES)}); pass the directory that "
                  "`raysearch run`, `sweep` or `compare` printed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise UiError(f"the MLflow UI exited with code {process.returncode} before it listened on port {port}:\n"
                          + "\n".join(tail))
        if not _free(port):
            return
        time.sleep(0.2)
    raise UiError(f"the MLflow UI did not listen on 127.0.0.1:{port} within {_START_TIMEOUT_S:g} s")


def serve(run_dir, port: int = 5000, announce=print) -> int:
    """Start the MLflow UI on 127.0.0.1:`port` over the run directory's store, announce the URL, and
    serve until interrupted (then stop the UI by its PID). A run tracked on a remote server: announce
    that server's URL instead and return at once."""
    run_dir = Path(run_dir).resolve()
    state = read_state(run_dir)
    uri = state["tracking_uri"]
    if uri and urllib.parse.urlparse(uri).scheme in ("http", "https"):
        announce(f"raysearch: this run was tracked on {uri}: {runs_url(uri, state['experiment_id'], state['parent_run_id'])}")
        return 0
    store = run_dir / "mlflow.db"
    if uri is None and not store.is_file():
        raise UiError(f"{run_dir} holds no MLflow store (mlflow.db)")
    if not _free(port):
        raise UiError(f"port {port} on 127.0.0.1 is in use; choose another with --port")
    backend = uri or f"sqlite:///{store}"
    log = run_dir / "mlflow_ui.log"  # the UI's own output (a line per request), not the console
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend,
                                    "--host", "127.0.0.1", "--port", str(port)], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_listening(process, port, log)
        announce(f"raysearch: MLflow UI at {runs_url(f'http://127.0.0.1:{port}', state['experiment_id'], state['parent_run_id'])} "
                 "(Ctrl-C stops it)")
        process.wait()
        raise UiError(f"the MLflow UI stopped by itself (exit code {process.returncode})")
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End the UI we started, and its workers (its own process group), by its PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
