"""Contract tests over the baselines table: every baseline runs a tiny budget end to end through Tune.

Adding a baseline to raysearch.baselines.BASELINES adds it here.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from ray import tune

import raysearch
from raysearch.baselines import BASELINES
from raysearch.baselines.sweep import EpochBudget
from raysearch.config import ConfigError, from_dict, load_config
from tests.conftest import TINY
from tests.helpers import ROOT, KillOnce

# Sequential trials so the order of results, and with it every model-based suggestion, is reproducible.
# No gradient clipping and lr up to 1e6: configurations with lr above ~100 tend to diverge (NaN) in their
# first epoch, depending on the cell. The ranges below give every baseline, at seed 0, both diverging
# and finishing trials (REA meets one among its 6 random configurations, hence its budget).
BUDGET = {"epochs": 3, "budget_epochs": 12, "max_concurrent": 1, "lr_range": [0.05, 1e6]}
OWN = {  # each baseline's own options, small enough for a test
    "random": {}, "asha": {"grace_period": 1}, "bohb": {"reduction_factor": 3},
    "tpe": {"startup_trials": 2},  # TPE's model suggests the last two of the four trials
    "rea": {"population": 6, "sample_size": 2, "budget_epochs": 18, "lr_range": [0.05, 1e8]},
    # fewer divergent proposals, and budget for a second promotion besides the killed trial's (epoch 2 is
    # only ever reached by a promoted trial, so the killed one is always a paused-and-resumed one too)
    "rank_nosh": {"proposals": 3, "proxy_samples": 8, "candidates": 50, "ranker_epochs": 30, "lr_range": [0.05, 1e4],
                  "budget_epochs": 18},
}
PAUSING = {"rank_nosh"}  # pauses trials at each level and resumes the promoted ones (within this budget)


def baseline_config(name: str, **search):
    data = {k: v for k, v in TINY.items() if k != "search"}
    data.update(name=name, training={"grad_clip": None}, retrain={"enabled": False},
                ray={"max_failures": 1}, search={"algorithm": name, **BUDGET, **OWN[name], **search})
    return from_dict(data)


def summary_budget(name: str) -> int:
    return {**BUDGET, **OWN[name]}["budget_epochs"]


class Record(tune.Callback):
    """Every reported (epoch, iterations since the trial's last (re)start) per trial."""

    def __init__(self):
        self.results = defaultdict(list)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results[trial.trial_id].append((result["epoch"], result["iterations_since_restore"]))


def test_every_baseline_has_a_test_setting():
    assert set(OWN) == set(BASELINES)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_contract(name, tmp_path, ray_session):
    # Run a: the trial that reaches epoch 2 first is SIGKILLed right after that checkpoint, and restarted.
    record = Record()
    summary = raysearch.run(baseline_config(name), output_dir=tmp_path / "a",
                            callbacks=[KillOnce(2, tmp_path / "killed"), record])
    rows, results = pq.read_table(tmp_path / "a" / "results.parquet").to_pylist(), record.results
    # Run b: the same seed, undisturbed (a restarted trial continues exactly, so nothing may differ).
    raysearch.run(baseline_config(name), output_dir=tmp_path / "b")
    rows_b = pq.read_table(tmp_path / "b" / "results.parquet").to_pylist()

    # the same seed suggests the same configurations in the same order
    assert [r["config"] for r in rows] == [r["config"] for r in rows_b]
    assert len({r["config"] for r in rows}) == len(rows) >= 3

    # a diverging trial fails with its reason; the others finish
    failed = [r for r in rows if r["status"] == "ERROR"]
    assert failed and all("diverged" in r["error"] for r in failed)
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    assert finished and all(r["val_accuracy"] is not None for r in finished)

    # preempted or paused trials continue their epoch count from their checkpoint
    assert (tmp_path / "killed").exists()
    for trial_id, seq in results.items():
        assert [epoch for epoch, _ in seq] == list(range(1, len(seq) + 1)), trial_id
    restored = [t for t, seq in results.items() if any(since < epoch for epoch, since in seq)]
    assert len(restored) >= (2 if name in PAUSING else 1)

    # the budget holds, and the best finished trial is the one selected
    assert sum(r["epochs"] or 0 for r in rows) <= summary_budget(name)
    top = max(r["epochs"] for r in finished)
    assert summary.val_accuracy == max(r["val_accuracy"] for r in finished if r["epochs"] == top)
    assert summary.extra["trials"] == len(rows) and summary.extra["failed_trials"] == len(failed)

    # one nested MLflow run per trial under the experiment's parent run
    client = MlflowClient(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    children = client.search_runs([summary.mlflow_experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary.mlflow_parent_run_id}'")
    assert sorted(c.data.tags["raysearch.trial_id"] for c in children) == sorted(r["trial_id"] for r in rows)
    by_trial = {c.data.tags["raysearch.trial_id"]: c for c in children}
    for r in rows:
        assert by_trial[r["trial_id"]].data.params["edge_1_0"] == json.loads(r["config"])["edge_1_0"]
        assert by_trial[r["trial_id"]].info.status == ("FAILED" if r["status"] == "ERROR" else "FINISHED")


@pytest.mark.parametrize("search, message", [
    ({"budget_epochs": 2}, "less than one full trial"),
    ({"lr_range": [0.5, 0.1]}, "expected \\[low, high\\]"),
    ({"lr_range": [0.1]}, "expected 2 values"),
    ({"max_concurrent": 0}, "must be >= 1"),
])
def test_common_option_errors(search, message):
    for name in BASELINES:
        with pytest.raises(ConfigError, match=f"search.{list(search)[0]}: .*{message}"):
            baseline_config(name, **search)


@pytest.mark.parametrize("search, message", [
    ({"level_epochs": [1, 4]}, "up to search.epochs = 3"),
    ({"level_epochs": [2, 1]}, "increasing"),
    ({"proxy": "nope"}, "not one of: flops, grad_norm"),
    ({"ranking_loss": "square"}, "not one of: logistic, hinge"),
    ({"promote_fraction": 1.5}, "must be <= 1.0"),
])
def test_rank_nosh_option_errors(search, message):
    with pytest.raises(ConfigError, match=message):
        baseline_config("rank_nosh", **search)


def test_tpe_options_reach_optunas_sampler():
    from raysearch.baselines.sweep import tpe
    from raysearch.joint import JointSpace
    from raysearch.spaces import build_space

    config = baseline_config("tpe", startup_trials=3, multivariate=True)
    options = config.search.options
    parts = tpe(config, JointSpace(build_space(config.space), options.lr_range, options.weight_decay_range))
    sampler = parts.search_alg._sampler
    assert (sampler._n_startup_trials, sampler._multivariate) == (3, True)
    assert parts.num_samples == BUDGET["budget_epochs"] // BUDGET["epochs"] and parts.max_concurrent == 1


def test_rank_nosh_default_levels_follow_the_trial_length():
    assert baseline_config("rank_nosh", epochs=27, budget_epochs=100).search.options.levels(27) == (3, 9, 27)
    assert baseline_config("rank_nosh").search.options.levels(3) == (1, 3)


def test_epoch_budget_counts_epochs_and_survives_a_restore():
    budget = EpochBudget(3)
    budget("t1", {"epoch": 1})
    budget("t1", {"epoch": 1, "done": True})  # Tune's repeat of a finished trial's last result
    budget("t2", {"epoch": 1})
    assert budget.used == 2 and not budget.stop_all()
    # Tune pickles the stopper and the callbacks together and restores the callbacks' state
    stop, callbacks = pickle.loads(pickle.dumps((budget, [budget])))
    assert stop is callbacks[0]
    fresh = EpochBudget(3)
    fresh.set_state(budget.get_state())
    fresh("t2", {"epoch": 2})
    assert fresh.used == 3 and fresh.stop_all()


def test_every_baseline_ships_a_config():
    for name in BASELINES:
        config = load_config(ROOT / "configs" / f"{name}_nb201_digits.yaml")
        assert config.search.algorithm == name and config.retrain.enabled


def test_cli_runs_a_shipped_baseline_config_and_retrains_its_best(tmp_path):
    """`raysearch run` end to end: sweep, selection, retraining with the selected float lr, files."""
    cmd = [sys.executable, "-m", "raysearch.cli", "run", str(ROOT / "configs" / "random_nb201_digits.yaml"),
           "--output-dir", str(tmp_path), "--set", "search.epochs=1", "--set", "search.budget_epochs=2",
           "--set", "retrain.epochs=1", "--set", "space.channels=4", "--set", "space.cells_per_stage=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["role"] for r in rows] == ["search", "search", "retrain"]
    best = max(rows[:2], key=lambda r: r["val_accuracy"])
    assert summary["genotype"] == best["genotype"] == rows[2]["genotype"]
    assert summary["hparams"]["lr"] == json.loads(best["config"])["lr"] == json.loads(rows[2]["config"])["lr"]
    assert summary["test_accuracy"] == rows[2]["test_accuracy"] and summary["extra"]["trials"] == 2
    assert "[search 00001 1/1]" in proc.stdout and "learning rate" in proc.stdout


def test_ctrl_c_mid_sweep_then_resume_continues_the_pyramid(tmp_path):
    """RANK-NOSH (searcher state, paused trials) interrupted by Ctrl-C, then `raysearch resume`."""
    import yaml

    from tests.test_run import _cli, _start_and_stop_at

    config = {**{k: v for k, v in TINY.items() if k != "search"}, "retrain": {"epochs": 1},
              "search": {"algorithm": "rank_nosh", **BUDGET, **OWN["rank_nosh"], "budget_epochs": 15,
                         "lr_range": [0.01, 0.5]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    driver, stderr, run_dir = _start_and_stop_at(tmp_path, "sweep.yaml", "[search ",
                                                 lambda d: os.kill(d.pid, signal.SIGINT), after=4)
    assert driver.returncode == 130, stderr[-3000:]
    assert not (run_dir / "summary.json").exists()
    proc = _cli("resume", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    search = [r for r in rows if r["role"] == "search"]
    assert [r["role"] for r in rows[len(search):]] == ["retrain"] and summary["extra"]["trials"] == len(search)
    assert sum(r["epochs"] for r in search) <= 15  # the budget spent before the interruption still counts
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    children = client.search_runs([summary["mlflow_experiment_id"]],
                                  f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    assert len(children) == len(search) + 1 and all(c.info.status == "FINISHED" for c in children)
