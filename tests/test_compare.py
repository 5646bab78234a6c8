"""`raysearch compare`: the config, the incumbent at a budget point, the files and table, and a tiny
comparison end to end through the CLI (budget, paired seeds, MLflow tree, `report`, `resume`)."""

from __future__ import annotations

import dataclasses
import json
import re

import pyarrow.parquet as pq
import pytest
import yaml

from raysearch.compare.budget import incumbent
from raysearch.compare.config import comparison_from_dict, load_comparison
from raysearch.compare.report import PLOTS, read_rows, render, table, write_rows
from raysearch.schema import ConfigError
from tests.helpers import ROOT, SENTINELS, assert_no_secret, assert_pyfunc_predicts, cli, serve_mlflow
from tests.browser import ARTIFACTS, chromium, render_page

TINY_SPACE = {"name": "nb201", "channels": 4, "cells_per_stage": 1, "stages": 1}
METHODS = ("autohas", "random", "autohas-sweep", "dha")
CELL_RUNS = sorted(f"{method} seed {i}" for method in METHODS for i in range(2))
# Seconds of search per method x seed: a trial's process takes ~5 s on these 2 cores to start, import
# torch and load digits before its first epoch (0.2 s), and 8 s left a slow CI machine no epoch; on the
# machine of 2026-12-07 (`import torch` 3.6 s) the first epoch came 11.4-11.9 s in, and 12 s left most
# method x seeds none (the code before and after that day's change alike).
BUDGET = 24


def _comparison(**compare):
    return {
        "name": "tiny-compare",
        "compare": {"budget_seconds": BUDGET, "seeds": 2, "retrain_seeds": 2, "anytime": [0.5], **compare},
        "shared": {"space": TINY_SPACE, "retrain": {"epochs": 1}},
        "methods": {
            "autohas": {"config": "autohas_nb201_digits.yaml", "set": {"search.epochs": 3}},
            "random": {"config": "random_nb201_digits.yaml", "set": {"search.epochs": 2, "search.budget_epochs": 40}},
            "autohas-sweep": {"config": "sweep_autohas_digits.yaml",
                              "set": {"search.epochs": 3, "sweep.num_samples": 3, "sweep.grace_period": 1}},
            "dha": {"config": "dha_nb201_digits.yaml",  # its model is the result
                    "set": {"search.epochs": 3, "space.op_norm": True}},
        },
    }


# -- config ----------------------------------------------------------------------------------------------

def test_methods_share_space_budget_and_paired_seeds():
    c = comparison_from_dict(_comparison(seed=7))
    configs = {(m, i): c.experiment(m, i, cpus_per_search=2) for m in c.methods for i in range(2)}
    for (method, i), config in configs.items():
        assert config.seed == 7 + i  # seed index i: the same seed for every method, another for each index
        assert config.search.budget_seconds == BUDGET and config.retrain.epochs == 1
        assert config.space.options.channels == 4 and config.space.options.cells_per_stage == 1
        assert config.name == f"tiny-compare-{method}"
    # the shared space replaces the method's (its `ops` too); other sections merge key by key
    assert configs["autohas", 0].space.options.ops == configs["random", 0].space.options.ops
    assert configs["random", 0].data.val_fraction == 0.25  # the method's own split is kept
    # a differentiable search in one trial takes the node's CPUs; a baseline's trials, a sweep's searches keep theirs
    assert configs["autohas", 0].ray.cpus_per_trial == 2 and configs["random", 0].ray.cpus_per_trial == 1
    assert configs["autohas-sweep", 0].ray.cpus_per_trial == 1 and configs["autohas-sweep", 0].sweep.num_samples == 3
    assert c.experiment("autohas", 0).ray.cpus_per_trial == 1


def test_stored_form_round_trips():
    c = comparison_from_dict(_comparison())
    again = comparison_from_dict(yaml.safe_load(c.to_yaml()))
    assert again == c and again.compare.fractions == (0.5, 1.0)


@pytest.mark.parametrize("change, field", [
    ({"methods": {"only": "autohas_nb201_digits.yaml"}}, "methods"),
    ({"methods": {"a": "no_such.yaml", "b": "random_nb201_digits.yaml"}}, "methods.a"),
    ({"methods": {"a": {"config": "autohas_nb201_digits.yaml", "set": {"search.tau": -1}},
                  "b": "random_nb201_digits.yaml"}}, "methods.a: search.tau"),
    ({"methods": {"a/b": "autohas_nb201_digits.yaml", "c": "random_nb201_digits.yaml"}}, "methods.a/b"),
    ({"shared": {"search": {"epochs": 1}}}, "shared"),
    ({"compare": {"budget_seconds": 0}}, "compare.budget_seconds"),
    ({"compare": {"anytime": [1.5]}}, "compare.anytime"),
    ({"budget": 3}, "budget"),
])
def test_config_errors_name_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        comparison_from_dict({**_comparison(), **change})
    assert str(err.value).startswith(field)


def test_shipped_comparisons_load():
    for name in ("compare_digits.yaml", "compare_cifar10.yaml"):
        c = load_comparison(ROOT / "configs" / name)
        assert c.compare.seeds >= 3 and len(c.methods) >= 9
        spaces = {c.experiment(m, 0).space for m in c.methods}
        # one space for every method; DHA's adds a batch norm after each op (space.op_norm), which its codes need
        assert len({(s.name, dataclasses.replace(s.options, op_norm=False)) for s in spaces}) == 1


# -- the incumbent at a budget point --------------------------------------------------------------------

def _record(t, trial, epoch, val, genotype="g"):
    return {"t": t, "trial": trial, "epoch": epoch, "val": val, "genotype": f"{genotype}{trial}", "hparams": {}}


def test_incumbent_is_the_best_at_the_top_fidelity_so_far():
    records = [_record(1, "a", 1, 0.5), _record(2, "b", 1, 0.6), _record(3, "a", 2, 0.4), _record(4, "b", 2, 0.7),
               _record(5, "c", 1, 0.9)]
    assert incumbent(records, 0.5) is None
    assert incumbent(records, 2).genotype == "gb" and incumbent(records, 2).trial_epochs == 2
    at3 = incumbent(records, 3)  # a reached 2 epochs first: the top fidelity wins over b's better 1-epoch score
    assert at3.genotype == "ga" and at3.val_accuracy == 0.4 and at3.seconds == 3 and at3.trial_epochs == 3
    at5 = incumbent(records, 5)  # c's 0.9 is at 1 epoch only
    assert at5.genotype == "gb" and at5.trial_epochs == 5


def test_a_single_trial_incumbent_is_its_latest_epoch():
    records = [_record(1, "s", 1, 0.8, "x"), _record(2, "s", 2, 0.3, "y")]
    assert incumbent(records, 1.5).genotype == "xs" and incumbent(records, 9).genotype == "ys"


# -- files and table -------------------------------------------------------------------------------------

def _rows():
    """Three methods x three seeds, end points only but one anytime point, with a tie and a failure."""
    tests = {"a": [0.9, 0.8, 0.7], "b": [0.8, 0.8, 0.9], "c": [0.5, None, 0.6]}
    rows = []
    for method, values in tests.items():
        for i, test in enumerate(values):
            base = {"comparison": "synthetic", "method": method, "algorithm": method, "seed_index": i, "seed": i,
                    "search_seconds": 10.0 + i, "budget_seconds": 10.0, "budget_fraction": 1.0}
            if test is None:
                rows.append({**base, "status": "failed: boom"})
                continue
            rows.append({**base, "used_seconds": 10.0, "trial_epochs": 4, "genotype": "g", "hparams": "{}",
                         "val_accuracy": test, "test_mean": test, "test_std": 0.01, "test_accuracies": [test, test],
                         "params": 100 * (i + 1), "flops": 1e4, "retrain_seconds": 2.0, "status": "stopped at budget"})
            rows.append({**rows[-1], "budget_fraction": 0.5, "budget_seconds": 5.0, "test_mean": test - 0.1})
    return rows


def test_table_ranks_and_wins():
    text = table(_rows())
    lines = text.splitlines()
    a, b, c = (next(line for line in lines if line.startswith(f"{m} ")) for m in "abc")
    assert "0.8000 +- 0.1000" in a and "0.8333 +- 0.0577" in b and "0.5500 +- 0.0707" in c  # the failure left out
    # ranks: seed 0 a 1, b 2, c 3; seed 1 a and b tie at 1.5, c (failed) 3; seed 2 b 1, a 2, c 3
    assert re.search(r"\s1\.50\s", a) and re.search(r"\s1\.50\s", b) and re.search(r"\s3\.00\s", c)
    assert "2 stopped at budget, 1 failed: boom" in c
    wins = lines[lines.index(next(line for line in lines if line.startswith("wins per pair"))) + 1:]
    assert wins[1].split() == ["a", "-", "1", "3"] and wins[2].split() == ["b", "1", "-", "3"]
    assert wins[3].split() == ["c", "0", "0", "-"]


def test_parquet_round_trips_and_render_writes_every_file(tmp_path):
    rows = _rows()
    write_rows(rows, tmp_path)
    back = read_rows(tmp_path)
    assert [{k: v for k, v in r.items() if v is not None} for r in back] == rows
    assert pq.read_schema(tmp_path / "comparison.parquet").field("test_accuracies").type.value_type.bit_width == 64
    text, files = render(tmp_path)
    assert text == table(rows) and (tmp_path / "comparison.txt").read_text() == text + "\n"
    for name in PLOTS:
        assert (tmp_path / name).stat().st_size > 5000, name  # a PNG with axes and points, not an empty canvas


def test_report_without_a_finished_run_says_so(tmp_path):
    done = cli("report", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "holds no finished run, sweep or comparison" in done.stderr


# -- end to end ------------------------------------------------------------------------------------------

def _tree(tracking_uri: str, experiment: str) -> dict:
    """{parent run id or None: [runs]} of the experiment's active runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    tree = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        tree.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
    return tree


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with serve_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mlflow_server):
    """A tiny comparison through the CLI against the real server, once for the tests below (the last one
    resumes it)."""
    folder = tmp_path_factory.mktemp("compare")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(_comparison()))
    out = folder / "out"
    # credentials in the URI (this server ignores them) and a Ray token of our own: neither may appear in
    # anything the comparison writes or prints
    url = mlflow_server.url.replace("http://", f"http://raysearch:{SENTINELS['password']}@")
    done = cli("compare", str(config), "--output-dir", str(out), "--tracking-uri", url,
               "--register-model", "tiny-compare-cell", cwd=ROOT, env={"RAY_AUTH_TOKEN": SENTINELS["token"]})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow {mlflow_server.url}" in done.stdout
    assert_no_secret(done.stdout + done.stderr, out, mlflow_server.folder)
    return out, done, mlflow_server.url


def test_compare_end_to_end_and_report(tiny_run):
    out, done, uri = tiny_run
    rows = read_rows(out)
    budget = float(BUDGET)
    assert len(rows) == len(METHODS) * 2 * 2  # methods x seeds x budget points
    for i in range(2):  # paired: seed index i has one seed, the same for both methods, another than index 1-i
        assert {r["seed"] for r in rows if r["seed_index"] == i} == {i}
    ends = [r for r in rows if r["budget_fraction"] == 1.0]
    for r in ends:
        assert r["status"] in ("stopped at budget", "finished early")
        # k = 2 retrainings of each choice; DHA's model is tested as its search trained it, once
        assert len(r["test_accuracies"]) == (1 if r["method"] == "dha" else 2)
        reports = json.loads((out / "cells" / r["method"] / f"seed{r['seed_index']}" / "cell.json").read_text())["reports"]
        # no epoch is reported later than one epoch's cost after the budget
        by_trial = {}
        for rep in reports:
            by_trial.setdefault(rep["trial"], []).append(rep["t"])
        epoch_cost = max(b - a for ts in by_trial.values() for a, b in zip([0.0, *ts], ts))
        assert max(rep["t"] for rep in reports) <= budget + epoch_cost, (r["method"], reports)
        if r["status"] == "finished early":
            assert r["search_seconds"] < budget + epoch_cost
    for r in rows:  # the anytime point chose from what was reported by then
        if r["budget_fraction"] == 0.5 and r["status"] != "no choice yet":
            assert r["used_seconds"] <= budget / 2
    dha_ends = [r for r in ends if r["method"] == "dha"]
    for r in dha_ends:  # the model at the end of its search, as its search trial reported it
        search = pq.read_table(out / "cells" / "dha" / f"seed{r['seed_index']}" / "results.parquet").to_pylist()
        assert [s["role"] for s in search] == ["search"]
        assert r["test_accuracies"] == [json.loads(search[0]["metrics"])["test_acc"]] and r["retrain_seconds"] is None
    # every choice was retrained k = 2 times, once per distinct choice
    cell_rows = pq.read_table(out / "cells" / "random" / "seed0" / "results.parquet").to_pylist()
    distinct = {r["genotype"] + (r["hparams"] or "") for r in rows if r["method"] == "random" and r["seed_index"] == 0
                and r["genotype"]}
    assert sum(r["role"] == "retrain" for r in cell_rows) == 2 * len(distinct)

    # the printed table is comparison.txt, and `report` prints it again byte for byte from the Parquet file
    text = (out / "comparison.txt").read_text()
    assert text in done.stdout
    report = cli("report", str(out), cwd=ROOT)
    assert report.returncode == 0 and report.stdout == text

    # MLflow, read back from the server: the comparison -> a run per method x seed -> its trials and retrainings
    tree = _tree(uri, "tiny-compare")
    (parent,) = tree[None]
    cells = tree[parent.info.run_id]
    assert sorted(r.info.run_name for r in cells) == CELL_RUNS
    for cell in cells:
        roles = [r.data.tags["raysearch.role"] for r in tree.get(cell.info.run_id, [])]
        retrainings = 0 if cell.info.run_name.startswith("dha") else 2
        assert "search" in roles and roles.count("retrain") >= retrainings and cell.info.status == "FINISHED"
    assert set(parent.data.metrics) == {f"test_accuracy.{m}" for m in METHODS}

    # each method x seed keeps the model of its final choice (its first retraining seed's; DHA's own), loadable
    # like a run's, and logged to the server once, by the trial that trained it
    import torch
    from mlflow.tracking import MlflowClient

    import raysearch

    for r in ends:
        card = raysearch.load_model(out, method=r["method"], seed=r["seed_index"]).card
        assert card.test_accuracy == r["test_accuracies"][0] and card.genotype == r["genotype"]
    client = MlflowClient(uri)
    logged = client.search_logged_models([parent.info.experiment_id])
    assert len(logged) == len(ends) == len({m.source_run_id for m in logged})
    # --register-model: each method x seed's model is one version of the name on the server, tagged with
    # where it came from, and mlflow.pyfunc predicts its logits from the server's registry
    versions = client.search_model_versions("name = 'tiny-compare-cell'")
    assert sorted((v.tags["method"], v.tags["seed_index"]) for v in versions) == sorted(
        (r["method"], str(r["seed_index"])) for r in ends)
    assert {v.source for v in versions} == {f"models:/{m.model_id}" for m in logged}
    version = next(v for v in versions if v.tags["method"] == "autohas" and v.tags["seed_index"] == "0")
    loaded = raysearch.load_model(out, method="autohas")
    images = torch.randn(3, loaded.card.in_channels, loaded.card.image_size, loaded.card.image_size)
    assert_pyfunc_predicts(uri, f"models:/tiny-compare-cell/{version.version}", loaded, images)
    missing = cli("export", str(out), "--format", "torchscript", cwd=ROOT)
    listed = missing.stderr.rsplit("its methods: ", 1)[-1].strip()
    assert missing.returncode == 2 and "--method NAME" in missing.stderr and sorted(listed.split(", ")) == sorted(METHODS)
    # the sweep method: its searches' trials under its method x seed run, each one whole search
    sweep_rows = [r for r in ends if r["method"] == "autohas-sweep"]
    assert {r["algorithm"] for r in sweep_rows} == {"autohas sweep"}
    for cell in (c for c in cells if c.info.run_name.startswith("autohas-sweep")):
        assert [r.data.tags["raysearch.role"] for r in tree[cell.info.run_id]].count("search") >= 2


def test_ui_lands_on_the_runs_table_with_the_nested_runs(tiny_run):
    out, _, uri = tiny_run
    browser = chromium()
    done = cli("ui", str(out), cwd=ROOT)  # tracked on a server: `ui` prints its URL and starts nothing
    assert done.returncode == 0 and f"this run was tracked on {uri}: " in done.stdout, done.stderr
    url = done.stdout.strip().rsplit(" ", 1)[1]
    assert url.startswith(f"{uri}/#/experiments/") and "/runs?viewStateShareKey=" in url
    assert "workflowType=machine_learning" in url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dom = render_page(browser, url, ARTIFACTS / "ui_compare.png")
    assert (ARTIFACTS / "ui_compare.png").stat().st_size > 10_000
    # the runs table of the training view (not the GenAI overview), with the comparison's run, its method x seed
    # runs unfolded under it (not their trials: test_compare_end_to_end_and_report checks the whole tree) and
    # the stored view's summary metrics as columns
    assert "tiny-compare" in dom and out.name in dom and "Model training" in dom and ">Runs<" in dom
    assert "viewing a shared view" in dom
    for cell in CELL_RUNS:
        assert f">{cell}<" in dom, cell
    tree = _tree(uri, "tiny-compare")
    trials = [r.info.run_name for cell in tree[tree[None][0].info.run_id] for r in tree[cell.info.run_id]]
    assert trials and not [name for name in trials if name in dom]  # folded under their method x seed
    for column in ("test_accuracy.autohas", "test_accuracy.random", "search_seconds", "trial_epochs"):
        assert column in dom, column


def test_resume_reruns_only_the_interrupted_method(tiny_run):
    out, _, uri = tiny_run
    # an interrupted method x seed runs again on resume, the finished ones are kept
    (out / "cells" / "random" / "seed1" / "cell.json").unlink()
    (out / "comparison.parquet").unlink()
    resumed = cli("resume", str(out), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    cells_run = len(METHODS) * 2
    assert resumed.stdout.count("finished earlier, kept") == cells_run - 1
    position = len(METHODS) + sorted(METHODS).index("random") + 1  # the stored config lists methods sorted
    assert f"[compare {position}/{cells_run}] random seed 1: random, budget {BUDGET} s" in resumed.stdout
    assert len(read_rows(out)) == cells_run * 2
    tree = _tree(uri, "tiny-compare")
    cells = tree[tree[None][0].info.run_id]
    assert sorted(r.info.run_name for r in cells) == CELL_RUNS  # the interrupted attempt's run is gone


def test_a_search_the_budget_stops_before_its_first_epoch_fails_its_cell_only():
    """A comparison goes on (raysearch.compare.run catches RunFailed per method x seed); an interruption would
    end it."""
    from types import SimpleNamespace

    from raysearch.phases import RunFailed, _finished

    rows = []
    with pytest.raises(RunFailed, match="no epoch within its budget"):
        _finished(SimpleNamespace(error=None, metrics={}), "search", 20, rows, {"role": "search"}, budget_spent=True)
    assert rows == [{"role": "search"}]
    _finished(SimpleNamespace(error=None, metrics={"epoch": 3}), "search", 20, rows, {}, budget_spent=True)
