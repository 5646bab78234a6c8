"""What a run hands back: the trained network a trial left in its checkpoint becomes the run's `model/`
folder, its MLflow model (and registered version), and the `model` entry of summary.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from raysearch.model import read_card, read_model, save_model
from raysearch.model.cost import measure_latency
from raysearch.tracking import Tracker
from trainables.common import copy_model


def keep_model(folder: Path, tracker: Tracker, selected, retrained=None, register: str | None = None,
               tags: dict[str, str] | None = None) -> dict | None:
    """The trained model written as `folder` and logged to the MLflow child run of the trial that trained it
    (registered as `register`, its version tagged with `tags` too): the retraining's (`retrained`, its Tune Result) or, without one, the model a
    final-model search trained (`selected`, the phase's Selected). None when that trial's checkpoint holds
    none. A model whose trial could not time it (a search a budget stopped before its last epoch) is timed
    here, on this machine."""
    source, role, trial = ((retrained, "retrain", retrained.metrics["trial_id"]) if retrained is not None
                           else (selected, "search", selected.trial_id))
    if source.checkpoint is None or copy_model(source.checkpoint, folder) is None:
        return None
    card = read_card(folder)
    if card.latency is None:
        module = read_model(folder).module
        card = dataclasses.replace(card, latency=measure_latency(module, card.shape))
        save_model(folder, module, card)
    run_id = tracker.find_child({"raysearch.role": role, "raysearch.trial_id": trial})
    logged = tracker.log_model(run_id, folder, register, tags)
    cost = {"model_params": card.params, "model_flops": card.flops,
            **{f"latency_{k}": v for k, v in card.latency.items() if k.endswith("_ms")}}
    tracker.log_metrics(run_id, cost, 0)
    return {"path": str(folder), "mlflow_uri": logged["uri"], "registered_version": logged["version"],
            "params": card.params, "flops": card.flops, "latency": card.latency, "test_accuracy": card.test_accuracy}
