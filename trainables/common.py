"""What every trainable shares: its set-up, and checkpoints (state dicts saved with torch.save)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

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
        return torch.load(Path(folder) / STATE_FILE, weights_only=False, map_location="cpu")


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


def copy_file(checkpoint, name: str, destination: Path) -> Path | None:
    """`name` of a checkpoint copied to `destination`; None when the checkpoint has no such file."""
    with checkpoint.as_directory() as folder:
        source = Path(folder) / name
        if not source.exists():
            return None
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
    return destination


def read_json(checkpoint, name: str):
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / name).read_text())
