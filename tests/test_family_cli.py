"""A DARTS-family search with perturbation selection, end to end through the CLI, Tune and MLflow."""

import json

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT
from tests.helpers import cli as _cli



def test_drnas_with_perturbation_selection_through_the_cli(tmp_path):
    proc = _cli("run", str(ROOT / "configs" / "drnas_nb201_digits.yaml"), "--set", "search.epochs=1",
                "--set", "search.selection=perturbation", "--set", "search.tune_epochs=1",
                "--set", "space.channels=4", "--set", "space.cells_per_stage=1", "--set", "retrain.epochs=1",
                "--output-dir", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one search epoch, then one tuning epoch after each of the 6 edge decisions
    assert "[search 7/7]" in proc.stdout and "decided 6" in proc.stdout and "[retrain 1/1]" in proc.stdout
    run = tmp_path / "out"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"] == "drnas" and summary["hparams"] == {"lr": 0.1, "weight_decay": 0.0005}
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert [r["role"] for r in rows] == ["search", "retrain"] and rows[0]["epochs"] == 7
    assert rows[0]["genotype"] == rows[1]["genotype"] == summary["genotype"]
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    child = client.search_runs([summary["mlflow_experiment_id"]], "tags.`raysearch.role` = 'search'")[0]
    assert len(client.get_metric_history(child.info.run_id, "derived_val_acc")) == 7
    assert [m.value for m in client.get_metric_history(child.info.run_id, "decided")] == [1, 2, 3, 4, 5, 6]
