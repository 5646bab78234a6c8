"""The product of a run: the trained fixed network, its card, and the ways to load, rebuild and judge it
(plain PyTorch; exporting and MLflow live in raysearch.export and raysearch.tracking)."""

from raysearch.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, ModelFileError, hparams_of, make_card
from raysearch.model.cost import measure_latency, size
from raysearch.model.network import build_network
from raysearch.model.store import (MODEL_DIR, LoadedModel, ModelNotFoundError, find_model, load_model, model_files,
                                   read_card, read_model, save_model, write_folder)

__all__ = ["CARD_FILE", "MODEL_DIR", "WEIGHTS_FILE", "LoadedModel", "ModelCard", "ModelFileError",
           "ModelNotFoundError", "build_network", "find_model", "hparams_of", "load_model", "make_card",
           "measure_latency", "model_files", "read_card", "read_model", "save_model", "size", "write_folder"]
