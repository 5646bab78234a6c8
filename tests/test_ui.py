"""`raysearch ui`: the URL it prints, and its refusals (the browser test is in tests/test_compare.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from raysearch.tracking import Tracker, default_uri
from raysearch.ui import UiError, runs_url, serve
from tests.helpers import ROOT, free_port


def test_the_url_names_the_runs_table_the_stored_view_and_the_training_workflow():
    assert runs_url("http://127.0.0.1:5000/", "3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=raysearch-abc&workflowType=machine_learning")
    assert runs_url("http://h:1", None) == "http://h:1/#/experiments"


def test_a_remote_run_gets_its_servers_url_and_nothing_starts(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "x", "tracking_uri": "http://10.0.0.5:5000",
                                                   "mlflow_experiment_id": "7", "mlflow_parent_run_id": "p"}))
    lines = []
    assert serve(tmp_path, announce=lines.append) == 0
    assert lines == ["raysearch: this run was tracked on http://10.0.0.5:5000: http://10.0.0.5:5000/#/experiments/7/"
                     "runs?viewStateShareKey=raysearch-p&workflowType=machine_learning"]


def test_a_directory_without_a_run_or_a_store_is_refused(tmp_path):
    with pytest.raises(UiError, match="holds no raysearch run"):
        serve(tmp_path)
    (tmp_path / "comparison.json").write_text(json.dumps({"tracking_uri": None}))
    with pytest.raises(UiError, match="holds no MLflow store"):
        serve(tmp_path)


def test_ui_serves_a_runs_own_store_and_stops_it_on_ctrl_c(tmp_path):
    tracker = Tracker(default_uri(tmp_path), "ui-test").start("parent", {})
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "x", "tracking_uri": None,
                                                   "mlflow_experiment_id": tracker.experiment_id,
                                                   "mlflow_parent_run_id": tracker.parent_run_id}))
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "raysearch.cli", "ui", str(tmp_path), "--port", str(port)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        line = ui.stdout.readline()  # printed once the UI listens
        assert line.startswith(f"raysearch: MLflow UI at http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}"
                               f"/runs?viewStateShareKey=raysearch-{tracker.parent_run_id}&"), line + ui.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    with pytest.raises(OSError):  # the UI it started is gone with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
