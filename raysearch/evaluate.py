"""`raysearch evaluate`: a saved model on its run's test split, or on other data of the same classes (an
experiment config's test split, or a folder of class folders), with per-class accuracy and a confusion
matrix.

    raysearch evaluate runs/<run>                        # the run's own test split: the reported accuracy
    raysearch evaluate runs/<run> --data photos/         # ROOT/<class>/<image> (or ROOT/test/<class>/...)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from raysearch.compare.config import CONFIG_FILE as COMPARISON_CONFIG, load_comparison
from raysearch.config import load_config
from raysearch.data import DataConfig, load_splits
from raysearch.data.imagefolder import ImageFolderConfig, load_imagefolder
from raysearch.model import LoadedModel, find_model, read_model
from raysearch.results import plot_confusion


class EvaluationError(ValueError):
    """Data the model cannot be tested on (other classes, image size or channels); one line."""


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured, written as evaluation.json beside confusion_matrix.png."""

    data: str  # what was tested: "the run's test split", a config's dataset, or a folder
    images: int
    accuracy: float
    per_class: dict  # class name -> accuracy on its images (None: no image of it)
    confusion: list  # [true class][predicted class] counts, in the model's class order
    folder: str  # where evaluation.json and confusion_matrix.png are

    def table(self) -> str:
        width = max(map(len, self.per_class))
        lines = [f"{self.data}: {self.images} images, accuracy {self.accuracy:.4f}", "per class:"]
        lines += [f"  {name.ljust(width)}  {'-' if acc is None else f'{acc:.4f}'}" for name, acc in self.per_class.items()]
        return "\n".join(lines + [f"confusion matrix: {self.folder}/confusion_matrix.png"])


def _run_data(run_dir: Path, method: str | None, seed: int) -> DataConfig:
    """The data section the model was trained and tested under."""
    if method is not None:
        return load_comparison(run_dir / COMPARISON_CONFIG).experiment(method, seed).data
    return load_config(run_dir / "config.yaml").data


def _other_config(path: Path, model: LoadedModel):
    """(images as the model takes them, labels) of an experiment config's test split."""
    splits = load_splits(load_config(path).data)
    shape, card = splits.shape, model.card
    if (shape.in_channels, shape.image_size) != (card.in_channels, card.image_size):
        raise EvaluationError(f"--data {path}: its images are {shape.in_channels} x {shape.image_size}^2, the "
                              f"model takes {card.in_channels} x {card.image_size}^2 (channels x side^2)")
    if shape.class_names != card.classes:
        raise EvaluationError(f"--data {path}: its classes {list(shape.class_names)} are not the model's "
                              f"{list(card.classes)}")
    mean = torch.tensor(shape.mean).view(1, -1, 1, 1)
    std = torch.tensor(shape.std).view(1, -1, 1, 1)
    return card.normalize(splits.test[0] * std + mean), splits.test[1]  # its own statistics undone


def _folder(path: Path, model: LoadedModel):
    """(images, labels) of a folder of class folders, decoded at the model's size and channels; its held-out
    split (test/ or val/) if it has one, else every image."""
    card = model.card
    raw = load_imagefolder(str(path), ImageFolderConfig(image_size=card.image_size, channels=card.in_channels,
                                                        cache=False))
    names = raw.shape.class_names
    unknown = [n for n in names if n not in card.classes]
    if unknown:
        raise EvaluationError(f"--data {path}: class folder(s) {unknown} are not classes of the model "
                              f"({', '.join(card.classes)})")
    x, y = (raw.test_x, raw.test_y) if raw.test_x is not None else (raw.x, raw.y)
    relabel = torch.tensor([card.classes.index(n) for n in names])
    return card.normalize(x), relabel[y]


def evaluate(run_dir, data=None, method: str | None = None, seed: int = 0, output=None) -> Evaluation:
    """Test the model of `run_dir` on its run's test split (`data` None: the accuracy the run reported),
    an experiment config's test split (`data` a YAML file) or a folder of class folders."""
    run_dir = Path(run_dir)
    folder = find_model(run_dir, method, seed)
    model = read_model(folder)
    if data is None:
        x, y = load_splits(_run_data(run_dir, method, seed)).test  # exactly as the trial tested it
        what = "the run's test split"
    elif Path(data).is_dir():
        x, y = _folder(Path(data), model)
        what = f"the images in {data}"
    elif Path(data).is_file():
        x, y = _other_config(Path(data), model)
        what = f"the test split of {data}"
    else:
        raise EvaluationError(f"--data: {data} is neither an experiment config nor a folder of class folders")
    classes = model.card.classes
    with torch.no_grad():
        predicted = torch.cat([model.module(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    confusion.index_put_((y, predicted), torch.ones_like(y), accumulate=True)
    per_class = {name: (float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None)
                 for k, name in enumerate(classes)}
    out = Path(output) if output else folder.parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    # correct / images, as the trial's accuracy divides the same count: the reported figure, exactly
    result = Evaluation(what, len(y), int(confusion.trace()) / len(y), per_class, confusion.tolist(), str(out))
    (out / "evaluation.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    plot_confusion(confusion.tolist(), list(classes), out / "confusion_matrix.png")
    return result
