"""The model card: the small JSON beside a model's weights that rebuilds the network and says what it is,
how it was trained, how well it tests and what it costs (`model.json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch

from raysearch.model.cost import measure_latency, size
from raysearch.shapes import DataShape

CARD_FILE, WEIGHTS_FILE = "model.json", "weights.pt"
FORMAT = 1  # the card's layout; a card of another format is refused with the version it needs


class ModelFileError(ValueError):
    """A model folder whose card or weights cannot be read (damaged, another format, not raysearch's)."""


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild, preprocess for and judge a saved fixed network."""

    space: dict  # the space section as config.yaml holds it: {"name": "nb201", "channels": 8, ...}
    genotype: str  # the architecture, in the space's string format
    in_channels: int  # image channels the network takes
    image_size: int  # image side the network takes (height = width)
    classes: tuple[str, ...]  # label names, indexed by the network's outputs
    mean: tuple[float, ...]  # per-channel mean subtracted from [0, 1] images (search-train's)
    std: tuple[float, ...]  # per-channel std the centred images are divided by
    dataset: str  # the dataset it was trained and tested on (data.dataset)
    hparams: dict  # how it was trained: lr (or a per-step schedule's summary), weight_decay, optimizer, epochs
    test_accuracy: float | None  # on the run's test split, in eval mode: the accuracy the run reported
    params: int  # trainable parameters
    flops: float  # multiply-accumulates per image of its conv and linear layers (the NAS papers' "FLOPs")
    latency: dict | None  # measured inference: device, batch_1_ms, batch_64_ms (medians); None: not measured
    trained_by: str  # what trained it: "retrain" (a run's, sweep's or comparison's retraining), or the search (dha)
    format: int = FORMAT

    @property
    def shape(self) -> DataShape:
        return DataShape(self.in_channels, self.image_size, len(self.classes), self.mean, self.std, self.classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] with values in [0, 1] as the network takes them: centred and scaled per
        channel by the training data's statistics (the same arithmetic as the run's splits)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> "ModelCard":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ModelFileError(f"{where} is not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ModelFileError(f"{where} is not a raysearch model card of format {FORMAT} (format: {found})")
        known = {f.name for f in fields(cls)}
        missing = known - set(data) - {"format"}
        if missing:
            raise ModelFileError(f"{where} lacks {', '.join(sorted(missing))}")
        data = {k: v for k, v in data.items() if k in known}
        return cls(**{**data, "classes": tuple(data["classes"]), "mean": tuple(data["mean"]),
                      "std": tuple(data["std"])})


def hparams_of(lr, weight_decay: float, optimizer: str, epochs: int) -> dict:
    """The card's training recipe; a per-step lr list (a search's, which retraining replays) is summed up
    by its first, largest and last values (the whole list is in artifacts/hparams.json)."""
    if isinstance(lr, (list, tuple)):
        lr = {"per_step": len(lr), "first": float(lr[0]), "max": float(max(lr)), "last": float(lr[-1])}
    return {"lr": lr, "weight_decay": float(weight_decay), "optimizer": optimizer, "epochs": int(epochs)}


def make_card(net, config, shape: DataShape, genotype: str, hparams: dict, test_accuracy: float | None,
              trained_by: str, latency: bool = True) -> ModelCard:
    """The card of `net`, trained under the experiment `config` (an ExperimentConfig) on data of `shape`
    (the splits' own, with their statistics); its latency is measured here, on the net's device, unless
    `latency` is false."""
    params, macs = size(net, shape)
    return ModelCard(
        space=config.to_dict()["space"], genotype=genotype, in_channels=shape.in_channels,
        image_size=shape.image_size, classes=shape.class_names, mean=tuple(shape.mean), std=tuple(shape.std),
        dataset=config.data.dataset, hparams=hparams, test_accuracy=test_accuracy, params=params, flops=macs,
        latency=measure_latency(net, shape) if latency else None, trained_by=trained_by)
