"""`raysearch export`: a run's model as TorchScript or ONNX (with a dynamic batch dimension), for serving
without raysearch. Both take the model's input, `card.normalize(images)`, and give class scores (logits).

    raysearch export runs/<run> --format onnx          # -> runs/<run>/model/model.onnx
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from raysearch.model import ModelCard, find_model, read_model

ONNX_OPSET = 18  # the opset the exporter writes (ONNX Runtime runs it)


def example_input(card: ModelCard, batch: int = 2) -> torch.Tensor:
    """A batch of the model's input shape (two images: a batch of one would be specialised by export)."""
    return torch.zeros(batch, card.in_channels, card.image_size, card.image_size)


def torchscript(module: nn.Module, card: ModelCard) -> torch.jit.ScriptModule:
    """The module traced to TorchScript (the networks are traceable: no data-dependent control flow)."""
    with _quiet_torchscript():
        return torch.jit.trace(module.eval(), example_input(card))


@contextlib.contextmanager
def _quiet_torchscript():
    """PyTorch deprecates TorchScript (still its path to C++ and mobile) and warns about the shape checks it
    freezes into a trace (the input shape is fixed but the batch)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _write_torchscript(module: nn.Module, card: ModelCard, path: Path) -> None:
    traced = torchscript(module, card)
    with _quiet_torchscript():
        torch.jit.save(traced, str(path))


def _write_onnx(module: nn.Module, card: ModelCard, path: Path) -> None:
    batch = torch.export.Dim("batch")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each of its passes
        torch.onnx.export(module.eval(), (example_input(card),), str(path), dynamo=True, input_names=["images"],
                          output_names=["scores"], dynamic_shapes={"x": {0: batch}}, opset_version=ONNX_OPSET,
                          external_data=False, verbose=False)


FORMATS = {  # format -> (default file name, writer)
    "torchscript": ("model.torchscript.pt", _write_torchscript),
    "onnx": ("model.onnx", _write_onnx),
}


def export(run_dir, fmt: str, output=None, method: str | None = None, seed: int = 0) -> Path:
    """Write the model of `run_dir` (a comparison's: of `method`, search seed `seed`) in format `fmt` to
    `output` (default: beside its weights); written whole or not at all. Returns the file's path."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = find_model(run_dir, method, seed)
    module, card, _ = read_model(folder)
    name, write = FORMATS[fmt]
    path = Path(output) if output else folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(module, card, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
