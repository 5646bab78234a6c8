"""A searcher's state on disk (Tune saves it with the experiment and hands it back on resume), in plain
values and tensors that `torch.load(weights_only=True)` reads: loading a state file, even one someone
altered in shared storage, runs no code."""

from __future__ import annotations

import torch


def save_state(path: str, state: dict) -> None:
    torch.save(state, path)


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
