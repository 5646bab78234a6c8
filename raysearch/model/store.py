"""A model on disk: `model/` in a run directory (or in a comparison's method x seed folder) holds
`weights.pt` (the state dict, read with `weights_only=True`: opening it runs no code) and `model.json`
(its card). Folders are written whole or not at all."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from raysearch.compare.config import CONFIG_FILE as COMPARISON_CONFIG, STATE_FILE as COMPARISON_STATE, cell_dir
from raysearch.config import ConfigError, read_yaml
from raysearch.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, ModelFileError
from raysearch.model.network import build_network
from raysearch.spaces.fixed import load_weights

MODEL_DIR = "model"


class ModelNotFoundError(FileNotFoundError):
    """The directory holds no model; the message says what it holds and what to run."""


class LoadedModel(NamedTuple):
    """What `load_model` returns: `module, card = raysearch.load_model(run_dir)` unpacks it."""

    module: nn.Module  # the fixed network, in eval mode; it takes `card.normalize(images)`
    card: ModelCard  # what the network is, how to preprocess for it, how well it tested, what it costs
    folder: Path  # the model folder it was read from


def model_files(net: nn.Module, card: ModelCard) -> dict[str, bytes]:
    """The files of a model folder, as bytes (a trial puts them in its checkpoint)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    return {WEIGHTS_FILE: buffer.getvalue(), CARD_FILE: card.to_json().encode()}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """`files` as the folder `folder`, replacing what was there: written beside it, then renamed, so a
    failure leaves the old folder (or none), never half a model."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh, stale = (folder.with_name(f".{folder.name}.{tag}-{os.getpid()}") for tag in ("new", "old"))
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    try:
        for name, content in files.items():
            (fresh / name).write_bytes(content)
        if folder.exists():
            folder.rename(stale)
        fresh.rename(folder)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def save_model(folder, net: nn.Module, card: ModelCard) -> Path:
    return write_folder(Path(folder), model_files(net, card))


def read_card(folder) -> ModelCard:
    path = Path(folder) / CARD_FILE
    return ModelCard.from_json(path.read_text(), str(path))


def read_model(folder, device="cpu") -> LoadedModel:
    """The model of a model folder, rebuilt from its card and loaded without running code from the file."""
    folder = Path(folder)
    card = read_card(folder)
    try:
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file, or a pickle that is not plain tensors
        raise ModelFileError(f"{folder / WEIGHTS_FILE} is not a weights file raysearch can open safely "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    net = load_weights(build_network(card.space, card.genotype, card.shape), state)
    return LoadedModel(net.to(torch.device(device)).eval(), card, folder)


def load_model(run_dir, device="cpu", method: str | None = None, seed: int = 0) -> LoadedModel:
    """The trained network a run, sweep or comparison ended with, in eval mode on `device`, with its card
    (`card.normalize` preprocesses [0, 1] images; its test accuracy is the run's).

    A comparison holds one model per method and search seed (each method's final choice, retrained with
    the first retraining seed): name the `method`, and the search seed index `seed`.
    """
    return read_model(find_model(run_dir, method, seed), device)


def find_model(run_dir, method: str | None = None, seed: int = 0) -> Path:
    """The model folder of a run directory, or a ModelNotFoundError saying what is there and what to run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelNotFoundError(f"{run_dir} is not a directory")
    if (run_dir / COMPARISON_STATE).exists():
        return _comparison_model(run_dir, method, seed)
    if method is not None:
        raise ModelNotFoundError(f"{run_dir} is a run, not a comparison: it has one model (leave out --method)")
    folder = run_dir / MODEL_DIR
    if (folder / CARD_FILE).exists():
        return folder
    raise ModelNotFoundError(f"{run_dir} has no model: {_why_no_model(run_dir)}")


def _listing(folder: Path) -> str:
    names = sorted(p.name + "/" * p.is_dir() for p in folder.iterdir() if not p.name.startswith("."))
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "nothing"


def _why_no_model(run_dir: Path) -> str:
    holds = f"it holds {_listing(run_dir)}"
    if not (run_dir / "run.json").exists():
        return f"it is not a raysearch run directory ({holds}); start one with `raysearch run CONFIG`"
    if not (run_dir / "summary.json").exists():
        return (f"the run was interrupted before its model was written ({holds}); `raysearch resume {run_dir}` "
                "finishes it, and it ends with its model")
    try:
        retrained = read_yaml(run_dir / "config.yaml").get("retrain", {}).get("enabled", True)
    except ConfigError:
        retrained = True
    if not retrained:
        return (f"the run did not retrain its choice (retrain.enabled: false), and only a retraining (or a "
                f"search whose model is the result, DHA) trains a model ({holds}); run it again with retraining on")
    return (f"the run finished without one (a run made before raysearch saved models, or a Sequential DHA "
            f"stopped in its first stage; {holds}); run it again")


def _comparison_model(run_dir: Path, method: str | None, seed: int) -> Path:
    methods = list(read_yaml(run_dir / COMPARISON_CONFIG, "comparison").get("methods") or {})
    if method is None or method not in methods:
        what = "is a comparison: name the method whose model you want" if method is None else \
            f"has no method {method!r}"
        raise ModelNotFoundError(f"{run_dir} {what} (--method NAME); its methods: {', '.join(methods)}")
    cell = cell_dir(run_dir, method, seed)
    folder = cell / MODEL_DIR
    if (folder / CARD_FILE).exists():
        return folder
    if not cell.exists():
        why = (f"search seed index {seed} did not run (the comparison has seeds 0 .. n-1, see compare.yaml); "
               f"if the comparison was interrupted, `raysearch resume {run_dir}` finishes it")
    else:
        why = f"its search or retraining did not end with a model (see comparison.txt; {cell} holds {_listing(cell)})"
    raise ModelNotFoundError(f"{method} seed {seed} of {run_dir} has no model: {why}")
