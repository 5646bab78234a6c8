"""What every trainable shares: its set-up, and checkpoints (state dicts saved with torch.save)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from raysearch.model import CARD_FILE, WEIGHTS_FILE, write_folder

STATE_FILE = "state.pt"


def set_up_trial() -> None:
    """A trainable's first step: torch computes with as many threads as the process has CPUs from Ray
    (one at least), and Ray's per-checkpoint INFO lines leave the trial's output (warnings still show).

    Ray's OMP_NUM_THREADS reaches torch only if torch loads after Ray set it; a process that loaded it
    earlier keeps a thread per core of the machine, and two such trials on 2 cores ran 5x slower.
    """
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def checkpoint_state() -> dict | None:
    """The state saved in the trial's last checkpoint (on the CPU), or None for a fresh trial."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return read_state(folder)


def read_state(folder) -> dict:
    """A checkpoint's state: tensors and plain values, read with weights_only=True, so that a state file
    someone altered in the shared storage cannot run code when a trial restores from it."""
    return torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")


def restore(loop) -> None:
    """Load the loop's state from the trial's last checkpoint, if it has one."""
    state = checkpoint_state()
    if state is not None:
        loop.load_state_dict(state)


def report(metrics: dict, state: dict | bytes, files: dict[str, object] | None = None) -> None:
    """Report one epoch's metrics with a checkpoint of `state` (a state dict, or one already saved to
    bytes by `torch.save`) plus `files` (bytes as they are, anything else as JSON)."""
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(state, bytes):
            (Path(folder) / STATE_FILE).write_bytes(state)
        else:
            torch.save(state, Path(folder) / STATE_FILE)
        for name, content in (files or {}).items():
            if isinstance(content, bytes):
                (Path(folder) / name).write_bytes(content)
                continue
            (Path(folder) / name).write_text(json.dumps(content))  # no indent: json's C encoder takes none (indented is pure Python)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def copy_model(checkpoint, folder: Path) -> Path | None:
    """The model files a checkpoint holds (raysearch.model: a trial's trained network) written as the model
    folder `folder`, whole or not at all; None when the checkpoint holds no model."""
    with checkpoint.as_directory() as source:
        names = (WEIGHTS_FILE, CARD_FILE)
        if not all((Path(source) / name).exists() for name in names):
            return None
        return write_folder(folder, {name: (Path(source) / name).read_bytes() for name in names})


def read_json(checkpoint, name: str):
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / name).read_text())
