"""The search trial's two threads: the search computes its epochs while the trial's thread reports them."""

import io
import subprocess
import sys
import threading
import time

import pytest
import torch

import trainables.search as search_trial
from raysearch.data import Halted
from raysearch.search import SearchLoop
from tests.conftest import tiny_config
from tests.helpers import ROOT

STATE_KEYS = {"algorithm", "train", "val", "epoch", "history"}


def _loop(digits, epochs: int) -> SearchLoop:
    return SearchLoop.from_config(tiny_config(search={"epochs": epochs}), digits)


def test_a_halted_loop_raises_at_its_next_batch_and_keeps_its_last_epoch(digits):
    loop = _loop(digits, 3)
    loop.run_epoch()
    consumed = loop.train.consumed
    loop.halt()
    with pytest.raises(Halted):
        loop.run_epoch()
    assert loop.epoch == 1 and loop.train.consumed == consumed and len(loop.history) == 1
    assert loop.halted  # and the next epoch raises at its start, before any batch (a last selection round draws none)


def test_the_search_runs_its_next_epoch_while_the_trial_reports_the_last_and_no_further(digits, monkeypatch):
    loop = _loop(digits, 3)
    per_epoch = loop.train.batches_per_pass
    reported, overlapped, ahead = [], [], []

    def report(metrics, state, files):
        # Tune's report waits for the driver; meanwhile the search must be drawing the next epoch's batches.
        if metrics["epoch"] < 3:
            deadline = time.monotonic() + 60
            while loop.train.consumed <= metrics["epoch"] * per_epoch and time.monotonic() < deadline:
                time.sleep(0.001)
            overlapped.append(loop.train.consumed > metrics["epoch"] * per_epoch)
            time.sleep(1.0)  # time to end the next epoch; the one after must wait for this report
            ahead.append(loop.train.consumed <= (metrics["epoch"] + 1) * per_epoch)
        reported.append((metrics["epoch"], torch.load(io.BytesIO(state), weights_only=True), files))

    monkeypatch.setattr(search_trial, "report", report)
    search_trial.run_and_report(loop)
    assert [epoch for epoch, _, _ in reported] == [1, 2, 3] and overlapped == ahead == [True, True]
    for epoch, state, files in reported:  # each checkpoint is its own epoch's, whatever ran after it
        assert set(state) == STATE_KEYS and state["epoch"] == epoch and len(state["history"]) == epoch
        assert state["train"]["consumed"] == epoch * per_epoch
        assert len(files[search_trial.DERIVED_FILE]["history"]) == epoch


@pytest.mark.timeout(120)  # a search the stop does not halt hangs its trial: fail soon, not at 900 s
def test_a_trial_stopped_by_tune_halts_its_search_within_a_step(digits, monkeypatch):
    loop = _loop(digits, 50)

    def report(metrics, state, files):
        if metrics["epoch"] == 2:
            raise SystemExit(0)  # what Tune's report raises in a trial it stops

    monkeypatch.setattr(search_trial, "report", report)
    with pytest.raises(SystemExit):
        search_trial.run_and_report(loop)
    consumed = loop.train.consumed
    assert not any(t.name == "raysearch-search" for t in threading.enumerate())
    assert loop.epoch <= 3 and consumed < 4 * loop.train.batches_per_pass  # halted, not run to its end
    time.sleep(0.2)
    assert loop.train.consumed == consumed


def test_an_error_in_the_search_fails_the_trial_with_it(digits, monkeypatch):
    loop = _loop(digits, 3)
    step, reported = loop.algorithm.step, []

    def failing_step(train, val):
        if loop.epoch == 1:
            raise FloatingPointError("loss is nan")
        return step(train, val)

    monkeypatch.setattr(loop.algorithm, "step", failing_step)
    monkeypatch.setattr(search_trial, "report", lambda metrics, state, files: reported.append(metrics["epoch"]))
    with pytest.raises(FloatingPointError, match="loss is nan"):
        search_trial.run_and_report(loop)
    assert reported == [1]


_EXITING_TRIAL = """
import atexit, sys, threading, time
from raysearch.data import load_splits
from raysearch.config import DataConfig
from raysearch.search import SearchLoop
from tests.conftest import tiny_config
from tests.helpers import ROOT
import trainables.search as search_trial

def last_at_exit():  # atexit runs its handlers last-registered first: this one runs after the trial's
    alive = [t for t in threading.enumerate() if t.name == "raysearch-search" and t.is_alive()]
    print("search thread alive at exit:", bool(alive), flush=True)

atexit.register(last_at_exit)
loop = SearchLoop.from_config(tiny_config(search={"epochs": 500}), load_splits(DataConfig(val_fraction=0.25)))
search_trial.report = lambda *item: time.sleep(600)  # the trial's thread is busy elsewhere, as in Tune's report
threading.Thread(target=search_trial.run_and_report, args=(loop,), daemon=True).start()
while loop.epoch < 1:
    time.sleep(0.05)
sys.exit(0)  # the trial's process ends (Tune stopped the trial) while the search computes
"""


def test_a_trial_process_that_exits_halts_its_search_first():
    """When Tune ends a trial's process while its search computes (a time budget that runs out), the
    search halts before the interpreter kills its thread inside torch (which aborted the process)."""
    done = subprocess.run([sys.executable, "-c", _EXITING_TRIAL], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "search thread alive at exit: False" in done.stdout, done.stdout + done.stderr
