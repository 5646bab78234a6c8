"""`raysearch sweep`: Ray Tune over a differentiable search's meta-hyper-parameters, each trial one search.

Config validation, the meta-space's Tune forms, then tiny sweeps end to end (ASHA through the CLI,
BOHB, a diverging search, and a killed driver that `raysearch resume` finishes).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from ray import tune

import raysearch
from raysearch import cli
from raysearch.config import SWEEP_ALGORITHMS, ConfigError, from_dict, load_config
from raysearch.meta_sweep import (SHARDED_TRIAL_MEMORY, SWEEPERS, MetaSpace, concurrency, max_epochs,
                                 tune_resources)
from raysearch.search import SearchLoop
from tests.conftest import TINY
from tests.helpers import ROOT
from tests.helpers import cli as _cli

EPOCHS = 3
PARAMS = {
    "search.encoding_lr": {"loguniform": [0.001, 0.1]},
    "search.tau": {"choice": [1.0, 10.0]},
    "search.lr_multipliers": {"choice": [[0.5, 1, 2], [0.1, 1, 10]]},
}


def sweep_dict(search=None, **sweep):
    """TINY (AutoHAS, C=4, one cell) with a sweep of 4 searches of EPOCHS epochs over PARAMS; `search`
    replaces the search section's fields (another algorithm drops AutoHAS's encoding_lr)."""
    data = {k: v for k, v in TINY.items()}
    base = {**TINY["search"], "epochs": EPOCHS}
    if (search or {}).get("algorithm", "autohas") != "autohas":
        base.pop("encoding_lr")
    data.update(name="tiny_sweep", retrain={"epochs": 1}, search={**base, **(search or {})},
                sweep={"num_samples": 4, "params": PARAMS, **sweep})
    return data


# -- the sweep section ------------------------------------------------------------------------------

BAD = [
    ({"params": {"search.colour": {"choice": [1]}}}, "sweep.params.search.colour: unknown field for autohas; "
                                                      "accepted: search.batch_size, search.selection"),
    ({"params": {"search.arch_lr": {"choice": [0.1]}}}, "sweep.params.search.arch_lr: unknown field for autohas"),
    ({"params": {"search.tau": {"normal": [1, 2]}}}, "sweep.params.search.tau: expected one of {choice: "),
    ({"params": {"search.tau": 5.0}}, "sweep.params.search.tau: expected one of"),
    ({"params": {"search.tau": {"choice": []}}}, "sweep.params.search.tau: choice takes a non-empty list"),
    ({"params": {"search.tau": {"uniform": [5, 1]}}}, "sweep.params.search.tau: uniform needs low < high"),
    ({"params": {"search.tau": {"uniform": [1]}}}, "sweep.params.search.tau: uniform takes \\[low, high\\]"),
    ({"params": {"search.tau": {"loguniform": [0, 1]}}}, "sweep.params.search.tau: loguniform needs low > 0"),
    ({"params": {"search.tau": {"uniform": [0, 10]}}},
     "sweep.params.search.tau: uniform \\[0.0, 10.0\\] can produce 0.0, which is not accepted: must be > 0.0"),
    ({"params": {"search.lr_multipliers": {"choice": [[1, 2], [1, -2]]}}},
     "sweep.params.search.lr_multipliers: .* can produce \\[1, -2\\], which is not accepted: must be > 0.0"),
    ({"params": {"search.batch_size": {"randint": [0, 64]}}}, "sweep.params.search.batch_size: .*must be >= 1"),
    ({"params": {"search.batch_size": {"uniform": [16, 64]}}}, "sweep.params.search.batch_size: .*expected an integer"),
    ({"params": {"search.epochs": {"randint": [1, 3]}}}, "sweep.params.search.epochs: cannot be swept"),
    ({"params": {"search.budget_seconds": {"choice": [5.0]}}}, "sweep.params.search.budget_seconds: cannot be swept"),
    ({"params": {"ray.workers": {"choice": [1, 2]}}}, "sweep.params.ray.workers: unknown field"),
    ({"params": {}}, "sweep.params: expected a mapping of at least one dotted field"),
    ({"params": PARAMS, "algorithm": "rea"}, "sweep.algorithm: 'rea' is not one of: random, asha, bohb"),
    ({"params": PARAMS, "metric": "val_loss"}, "sweep.metric: 'val_loss' is not one of: derived_val_acc"),
    ({"params": PARAMS, "num_samples": 0}, "sweep.num_samples: must be >= 1"),
    ({"params": PARAMS, "colour": 1}, "sweep.colour: unknown field; accepted: params, algorithm"),
]


@pytest.mark.parametrize("sweep, message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_bad_sweep_sections_name_the_field(sweep, message):
    data = sweep_dict()
    data["sweep"] = sweep
    with pytest.raises(ConfigError, match=f"^{message}"):
        from_dict(data)


def test_checks_span_the_swept_fields_and_the_rest_of_the_config():
    # progressive DrNAS needs space.channels divisible by both partial_channels
    data = sweep_dict(search={"algorithm": "drnas", "progressive": True, "partial_channels": [2, 2]})
    data["space"] = {**data["space"], "channels": 6}
    data["sweep"] = {"params": {"space.channels": {"choice": [6, 5]}}}
    with pytest.raises(ConfigError, match="^sweep.params.space.channels: choice \\[6, 5\\] can produce 5, which "
                                          "is not accepted: 5 is not divisible by search.partial_channels"):
        from_dict(data)
    # each value is fine with the other field as configured; together, 4 channels and thirds are not
    data["sweep"] = {"params": {"space.channels": {"choice": [6, 4]},
                                "search.partial_channels": {"choice": [[2, 2], [3, 3]]}}}
    with pytest.raises(ConfigError, match="^sweep.params: the combination .*'space.channels': 4, "
                                          "'search.partial_channels': \\[3, 3\\].* is not accepted: space.channels"):
        from_dict(data)
    data["sweep"] = {"params": {"search.epsilon": {"choice": [1]}}}
    with pytest.raises(ConfigError, match="^sweep.params.search.epsilon: unknown field for drnas"):
        from_dict(data)


def test_a_baseline_cannot_be_swept():
    data = sweep_dict(search={"algorithm": "asha"})
    with pytest.raises(ConfigError, match="^search.algorithm: asha is a black-box baseline .* use one of autohas, "
                                          "darts, darts_es, dha, drnas, gdas, sdarts_rs, sequential_dha"):
        from_dict(data)


def test_every_darts_family_field_is_sweepable():
    for algorithm, field, dist in [("darts", "search.arch_lr", {"loguniform": [1e-4, 1e-2]}),
                                   ("sdarts_rs", "search.epsilon", {"uniform": [0.1, 0.5]}),
                                   ("darts_es", "search.es_threshold", {"uniform": [1.1, 2.0]}),
                                   ("gdas", "search.tau_max", {"choice": [5.0, 10.0]}),
                                   ("gdas", "space.channels", {"randint": [4, 6]})]:
        data = sweep_dict(search={"algorithm": algorithm})
        data["sweep"] = {"params": {field: dist}}
        assert from_dict(data).sweep.params[0].field == field


def test_sweep_section_round_trips_and_the_searches_run_without_it():
    config = from_dict(sweep_dict())
    assert from_dict(config.to_dict()) == config
    assert from_dict(yaml.safe_load(config.to_yaml())) == config
    assert config.to_dict()["sweep"]["params"] == PARAMS
    assert "sweep" not in from_dict(TINY).to_dict()  # a plain experiment's dict is unchanged
    one = config.without_sweep({"search.tau": 1.0, "search.lr_multipliers": [0.1, 1, 10]})
    assert one.sweep is None and one.search.options.tau == 1.0
    assert one.search.options.lr_multipliers == (0.1, 1.0, 10.0)
    assert one.search.options.encoding_lr == config.search.options.encoding_lr


def test_meta_space_tune_and_configspace_forms():
    from ray.tune.search.sample import Float, Integer

    from raysearch.baselines.sweep import to_configspace, to_tune

    data = sweep_dict()
    data["sweep"]["params"] = {**PARAMS, "search.batch_size": {"randint": [16, 64]}}
    space = MetaSpace(from_dict(data).sweep.params)
    tune_space = to_tune(space.dims)
    assert list(tune_space) == space.fields
    assert isinstance(tune_space["search.encoding_lr"], Float)
    assert tune_space["search.tau"].categories == [1.0, 10.0]
    assert tune_space["search.lr_multipliers"].categories == ["[0.5, 1, 2]", "[0.1, 1, 10]"]  # lists travel as JSON
    assert isinstance(tune_space["search.batch_size"], Integer) and tune_space["search.batch_size"].upper == 65
    cs = to_configspace(space.dims, seed=0)
    assert cs["search.batch_size"].upper == 64 and cs["search.encoding_lr"].log
    for sample in cs.sample_configuration(8):  # every ConfigSpace sample builds a valid search
        values = space.values(dict(sample))
        assert isinstance(values["search.lr_multipliers"], list) and 16 <= values["search.batch_size"] <= 64
        from_dict(space.experiment(from_dict(data).without_sweep().to_dict(), dict(sample)))
    assert set(SWEEPERS) == set(SWEEP_ALGORITHMS)


def test_max_epochs_covers_the_selection_epochs_a_swept_field_adds():
    data = sweep_dict(search={"algorithm": "darts", "selection": "perturbation", "tune_epochs": 1})
    data["sweep"] = {"params": {"search.tune_epochs": {"randint": [1, 2]}}}
    assert max_epochs(from_dict(data)) == EPOCHS + (6 - 1) * 2 + 1  # NB201: 6 rounds, 2 tuning epochs between


def test_concurrency_counts_a_sharded_search_s_workers_and_never_oversubscribes(monkeypatch):
    import raysearch.baselines.sweep as parts

    monkeypatch.setattr(parts.ray, "cluster_resources", lambda: {"CPU": 8.0})
    data = sweep_dict()
    assert concurrency(from_dict(data)) == 8
    data["ray"] = {"workers": 2, "cpus_per_worker": 1.5}  # 2 x 1.5 = 3 CPUs per search (its trial takes none)
    assert concurrency(from_dict(data)) == 2
    data["sweep"]["max_concurrent"] = 5
    assert concurrency(from_dict(data)) == 2
    data["sweep"]["max_concurrent"] = 1
    assert concurrency(from_dict(data)) == 1


def test_a_sharded_search_s_trial_reserves_no_cpu_or_gpu_so_it_never_holds_what_workers_wait_for():
    data = sweep_dict()
    data["ray"] = {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 1, "gpus_per_trial": 1}
    sharded = from_dict(data)
    assert tune_resources(sharded, sharded=True) == {"cpu": 0, "gpu": 0, "memory": SHARDED_TRIAL_MEMORY}
    assert tune_resources(sharded, sharded=False) == {"cpu": 1.0, "gpu": 1.0}  # its retraining trains itself
    assert tune_resources(from_dict(sweep_dict()), sharded=True) == {"cpu": 1.0, "gpu": 0.0}  # 1 worker: itself


def test_shipped_sweep_configs():
    autohas = load_config(ROOT / "configs" / "sweep_autohas_digits.yaml")
    gdas = load_config(ROOT / "configs" / "sweep_gdas_digits.yaml")
    assert autohas.search.algorithm == "autohas" and gdas.search.algorithm == "gdas"
    assert [p.field for p in autohas.sweep.params] == ["search.encoding_lr", "search.tau", "search.lr_multipliers"]
    assert autohas.sweep.params[0].kind == "loguniform"
    assert [p.field for p in gdas.sweep.params] == ["search.tau_max", "search.arch_lr", "search.weight_lr"]
    for config in (autohas, gdas):
        assert config.sweep.algorithm == "asha" and config.sweep.num_samples >= 4 and config.retrain.enabled


def test_the_command_must_match_the_config(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(), sort_keys=False))
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(TINY))
    assert cli.main(["sweep", str(tmp_path / "plain.yaml"), "--output-dir", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.startswith("raysearch: error: sweep: this config has no `sweep:` section")
    assert cli.main(["run", str(tmp_path / "sweep.yaml"), "--output-dir", str(tmp_path / "b")]) == 2
    assert "run it with `raysearch sweep CONFIG`" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything started
    assert cli.main(["validate", str(tmp_path / "sweep.yaml")]) == 0
    assert "4 searches over search.encoding_lr" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="^sweep: "):
        raysearch.run(from_dict(sweep_dict()), output_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="^sweep: "):
        raysearch.sweep(from_dict(TINY), output_dir=tmp_path / "c")


# -- sweeps end to end ------------------------------------------------------------------------------

def _placement_groups_left() -> list:
    import ray

    return [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]


def _children(run_dir: Path, summary: dict) -> dict:
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([summary["mlflow_experiment_id"]],
                              f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'")
    return client, runs


def _one_epoch_in_a_plain_loop(config, values: dict) -> dict:
    """Epoch 1 of the search a trial with `values` runs, outside Ray (1 thread, as Ray gives a 1-CPU trial)."""
    from raysearch.data import load_splits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = config.without_sweep(values)
        return SearchLoop.from_config(one, load_splits(one.data)).run_epoch()
    finally:
        torch.set_num_threads(threads)


def test_asha_sweep_through_the_cli(tmp_path, ray_session, capsys):
    """4 tiny AutoHAS searches under ASHA on 2 CPUs: printed events and table, results.parquet, MLflow
    nesting, summary.json, the best search retrained, the sampled values reaching each search, and no
    placement group left."""
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(), sort_keys=False))
    run_dir = tmp_path / "out"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["sweep", str(tmp_path / "sweep.yaml"), "--output-dir", str(run_dir)]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)  # the CLI turns SIGTERM into an exit for its run
    assert _placement_groups_left() == []
    out = capsys.readouterr().out
    config = load_config(run_dir / "config.yaml")
    assert config.sweep is not None  # what `raysearch resume` dispatches on

    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    searches = rows[:-1]
    assert [r["role"] for r in rows] == ["search"] * 4 + ["retrain"]
    assert len({r["trial_id"] for r in searches}) == 4 and all(r["status"] == "TERMINATED" for r in rows)
    for r in searches:
        assert set(json.loads(r["config"])) == set(PARAMS)  # only the sampled values
        # a search ASHA stopped derives the lr schedule it planned, not the part it ran
        assert r["genotype"].startswith("|") and len(json.loads(r["hparams"])["lr"]) == EPOCHS * (1078 // 64)
        number = r["trial_id"].rsplit("_", 1)[1]
        assert f"[search {number}] started  search.encoding_lr " in out
        event = "finished after epoch 3" if r["epochs"] == EPOCHS else f"stopped by asha after epoch {r['epochs']}"
        assert f"[search {number}] {event}" in out
        assert f"[search {number} 1/{EPOCHS}]  train_loss" in out
    assert len({r["config"] for r in searches}) == 4

    summary = json.loads((run_dir / "summary.json").read_text())
    finished = [r for r in searches if r["epochs"] == EPOCHS]
    best = max(finished, key=lambda r: r["val_accuracy"])
    assert summary["val_accuracy"] == best["val_accuracy"] and summary["genotype"] == best["genotype"]
    assert summary["hparams"] == json.loads(best["hparams"]) == json.loads(rows[-1]["hparams"])
    assert rows[-1]["genotype"] == best["genotype"] and summary["test_accuracy"] == rows[-1]["test_accuracy"]
    assert summary["extra"]["trials"] == 4 and summary["extra"]["failed_trials"] == 0
    assert summary["extra"]["best_params"] == json.loads(best["config"])
    # the end table: a row per search with its values, epochs, metric and status; then the summary
    table = out[out.index("trial  search.encoding_lr  search.tau  search.lr_multipliers  epochs  derived_val_acc"):]
    assert "<- best" in table.splitlines()[1 + searches.index(best)] and "trials (failed)            4 (0)" in out
    # `report` prints that table and the summary again from the run's files, and redraws every search's plots
    plots = sorted((run_dir / "artifacts").rglob("encodings.png"))
    assert len(plots) == 4
    for plot in plots:
        plot.unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    sweep_table, _, summary_table = capsys.readouterr().out.rstrip("\n").split("\n\n")
    assert sweep_table in out and out.rstrip("\n").endswith(summary_table)
    assert all(plot.stat().st_size > 5000 for plot in plots)

    client, children = _children(run_dir, summary)
    assert client.get_run(summary["mlflow_parent_run_id"]).info.status == "FINISHED"
    by_trial = {c.data.tags["raysearch.trial_id"]: c for c in children}
    assert sorted(c.data.tags["raysearch.role"] for c in children) == ["retrain"] + ["search"] * 4
    for r in searches:
        child = by_trial[r["trial_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.params == {k: str(v) for k, v in json.loads(r["config"]).items()}
        history = client.get_metric_history(child.info.run_id, "derived_val_acc")
        assert [m.step for m in history] == list(range(1, r["epochs"] + 1))
        assert {"encodings.json", "encodings.png"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    retrain = next(c for c in children if c.data.tags["raysearch.role"] == "retrain")
    assert len(client.get_metric_history(retrain.info.run_id, "test_acc")) == 1

    # each search ran with its own sampled values: its first epoch is that of a plain loop with them
    for r in searches[:2]:
        plain = _one_epoch_in_a_plain_loop(config, json.loads(r["config"]))
        child = by_trial[r["trial_id"]]
        for key in ("train_loss", "derived_val_acc", "lr_factor"):
            logged = client.get_metric_history(child.info.run_id, key)[0].value
            assert logged == pytest.approx(plain[key], rel=1e-5), (r["config"], key)
    first = [client.get_metric_history(by_trial[r["trial_id"]].info.run_id, "train_loss")[0].value for r in searches]
    assert len(set(first)) == 4  # different values, different searches


class Record(tune.Callback):
    """Every reported (epoch, iterations since the trial's last (re)start) per trial."""

    def __init__(self):
        self.results = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.setdefault(trial.trial_id, []).append((result["epoch"], result["iterations_since_restore"]))


def test_bohb_sweep_and_its_paused_searches_continue_their_epochs(tmp_path, ray_session):
    config = from_dict({**sweep_dict(algorithm="bohb", num_samples=4), "retrain": {"enabled": False}})
    record = Record()
    summary = raysearch.sweep(config, output_dir=tmp_path, callbacks=[record])
    assert _placement_groups_left() == []
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["role"] for r in rows] == ["search"] * 4 and all(r["status"] == "TERMINATED" for r in rows)
    assert summary.extra["sweep_algorithm"] == "bohb" and summary.extra["trials"] == 4
    # HyperBand's brackets stop searches at rungs (and may pause some until their rung fills, which
    # depends on timing); a paused search continues its epochs from its checkpoint
    for trial_id, seq in record.results.items():
        assert [epoch for epoch, _ in seq] == list(range(1, len(seq) + 1)), trial_id
    assert sorted(record.results) == sorted(r["trial_id"] for r in rows)
    assert any(r["epochs"] == EPOCHS for r in rows) and summary.val_accuracy == max(
        r["val_accuracy"] for r in rows if r["epochs"] == EPOCHS)


def test_a_diverging_search_fails_alone(tmp_path, ray_session, capsys):
    data = sweep_dict(algorithm="random", num_samples=2)
    # seed 1: Tune's seeded sampler draws 0.1, then 1e30
    data.update(seed=1, training={"grad_clip": None}, retrain={"enabled": False}, ray={"max_failures": 0})
    data["search"]["epochs"] = 1
    data["sweep"]["params"] = {"training.lr": {"choice": [0.1, 1e30]}}
    summary = raysearch.sweep(from_dict(data), output_dir=tmp_path)
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["ERROR", "TERMINATED"]
    failed = next(r for r in rows if r["status"] == "ERROR")
    assert "diverged" in failed["error"] and json.loads(failed["config"]) == {"training.lr": 1e30}
    assert summary.extra["failed_trials"] == 1 and summary.extra["best_params"] == {"training.lr": 0.1}
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith(f"[search {failed['trial_id'].rsplit('_', 1)[1]}] failed"))
    assert line.startswith(f"[search {failed['trial_id'].rsplit('_', 1)[1]}] failed after epoch 0: raysearch."
                           "training.DivergenceError: ") and "diverged" in line
    traceback = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert traceback.is_relative_to(tmp_path / "ray") and traceback.exists()  # kept in the run directory
    assert "Traceback" not in err and "Trial task failed" not in err  # one line per failure, not Tune's dump


def _await_state_snapshot(run_dir: Path, since: float, timeout: float = 60) -> None:
    """Wait until Tune has stored a readable experiment state written after `since`, so the epochs the
    console already showed are in it (a kill before that snapshot would rightly start every search over)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for state in run_dir.glob("ray/**/experiment_state-*.json"):
            try:
                if state.stat().st_mtime > since and json.loads(state.read_text()):
                    return
            except (OSError, ValueError):  # being synced into place
                pass
        time.sleep(0.1)
    raise AssertionError(f"no experiment state snapshot under {run_dir} within {timeout} s")


def _sweep_and_kill(tmp_path, after: int):
    """Start `raysearch sweep` in its own process group and SIGKILL the group once `after` epoch lines
    are out and Tune has stored them; Ray's processes share the group, so none outlives the driver."""
    driver = subprocess.Popen([sys.executable, "-m", "raysearch.cli", "sweep", "sweep.yaml", "--output-dir", "out"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    watchdog = threading.Timer(300, lambda: os.killpg(driver.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in driver.stdout:
            lines.append(line)
            after -= line.startswith("[search ") and f"/{EPOCHS}]" in line
            if after == 0:
                _await_state_snapshot(tmp_path / "out", since=time.time())
                os.killpg(driver.pid, signal.SIGKILL)
                break
        driver.wait(timeout=120)
    finally:
        watchdog.cancel()
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return driver, "".join(lines)


def test_driver_killed_mid_sweep_then_resume_finishes_it(tmp_path):
    """kill -9 of `raysearch sweep` after 4 trial-epochs; `raysearch resume` restores the Tune experiment
    and finishes it: every search exactly once in results.parquet and MLflow, each epoch logged once."""
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(), sort_keys=False))
    driver, before = _sweep_and_kill(tmp_path, after=4)
    run_dir = tmp_path / "out"
    assert driver.returncode == -signal.SIGKILL and not (run_dir / "summary.json").exists(), before
    proc = _cli("resume", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "raysearch: sweep of 4 autohas searches" in proc.stdout and "<- best" in proc.stdout
    assert "Restored on" not in proc.stdout + proc.stderr  # Ray's per-trial restore lines stay quiet
    assert proc.stdout.count("] started  ") < 4  # the stored experiment went on: not every search started over

    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    searches = [r for r in rows if r["role"] == "search"]
    assert [r["role"] for r in rows] == ["search"] * 4 + ["retrain"] and len({r["trial_id"] for r in searches}) == 4
    assert all(r["status"] == "TERMINATED" for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mlflow_parent_run_id"] == json.loads((run_dir / "run.json").read_text())["mlflow_parent_run_id"]
    client, children = _children(run_dir, summary)
    assert sorted(c.data.tags["raysearch.trial_id"] for c in children if c.data.tags["raysearch.role"] == "search") \
        == sorted(r["trial_id"] for r in searches)
    assert len(children) == 5 and all(c.info.status == "FINISHED" for c in children)
    assert client.get_run(summary["mlflow_parent_run_id"]).info.status == "FINISHED"
    by_trial = {c.data.tags["raysearch.trial_id"]: c for c in children}
    for r in searches:
        steps = [m.step for m in client.get_metric_history(by_trial[r["trial_id"]].info.run_id, "derived_val_acc")]
        assert steps == list(range(1, r["epochs"] + 1)), r["trial_id"]
