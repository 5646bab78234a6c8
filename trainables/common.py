"""Checkpoint helpers shared by the trainables (state dicts saved with torch.save)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from ray import tune

STATE_FILE = "state.pt"


def quiet_ray_logs() -> None:
    """Drop Ray's per-checkpoint INFO lines from the trial's output (warnings still show)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def restore(loop) -> None:
    """Load the loop's state from the trial's last checkpoint, if it has one."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            loop.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=False, map_location="cpu"))


def report(metrics: dict, state: dict, files: dict[str, object] | None = None) -> None:
    """Report one epoch's metrics with a checkpoint of `state` plus JSON `files`."""
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / STATE_FILE)
        for name, content in (files or {}).items():
            (Path(folder) / name).write_text(json.dumps(content, indent=1))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def read_json(checkpoint, name: str):
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / name).read_text())
