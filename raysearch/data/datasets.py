"""Datasets as in-memory tensors: digits (embedded in scikit-learn), a harder digits generated from it,
CIFAR from disk, and any local directory of class folders (imagefolder).

CIFAR is read from the python-pickle format of the official archives
(`cifar-10-batches-py/`, `cifar-100-python/`), the same files torchvision's
`CIFAR10(root, download=False)` reads. We parse them directly because
torchvision also verifies the archive's MD5 sums, which would reject every
small file written in the same format for tests.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raysearch.data.imagefolder import ImageFolderConfig, load_imagefolder, scan_imagefolder
from raysearch.data.raw import DatasetNotFoundError, RawData
from raysearch.registry import Registry
from raysearch.schema import spec
from raysearch.shapes import DataShape


@dataclass(frozen=True)
class NoOptions:
    """A dataset without options of its own."""


@dataclass(frozen=True)
class DigitsHardConfig:
    """digits_hard: each digit upsampled, rotated, shifted and put over random noise (in the style of the
    MNIST-rot and MNIST-back-rand variants of Larochelle et al., 2007), one image per digit."""

    image_size: int = spec(16, ge=8)  # side of the generated images (the 8x8 digits are upsampled to it)
    rotation: float = spec(45.0, ge=0.0, le=180.0)  # largest rotation either way, degrees (uniform)
    shift: float = spec(0.15, ge=0.0, lt=0.5)  # largest translation either way, a fraction of the side (uniform)
    background: float = spec(0.6, ge=0.0, le=1.0)  # uniform noise in [0, background] behind the digit
    seed: int = spec(0, ge=0)  # seed of the transforms and the noise (apart from the split's)


def load_digits(root: str | None = None, options: NoOptions = NoOptions()) -> RawData:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    return RawData(x, y, None, None, DataShape(in_channels=1, image_size=8, num_classes=10))


def load_digits_hard(root: str | None = None, options: DigitsHardConfig = DigitsHardConfig()) -> RawData:
    """Deterministic (the same bytes for the same options): one seeded draw of angle, shift and noise per
    digit; nothing is downloaded. One image per digit, so no digit appears in two splits."""
    digits, o = load_digits(), options
    size = o.image_size
    x = F.interpolate(digits.x, size=(size, size), mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(o.seed)
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(o.rotation)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 2 * o.shift  # grid coordinates span 2 per side
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)
    noise = torch.rand(x.shape, generator=gen) * o.background
    x = x + (1 - x) * noise  # the digit over the noise: ink stays ink, the background is random
    return RawData(x, digits.y, None, None, DataShape(in_channels=1, image_size=size, num_classes=10))


_CIFAR = {
    # name: (folder, train files, test file, label key, classes, the file and key of the class names)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10,
                ("batches.meta", "label_names")),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", 100, ("meta", "fine_label_names")),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _ArrayUnpickler(pickle.Unpickler):
    """The official archives' pickles hold dicts, lists, strings and numpy arrays; anything else a file
    names (os.system, a class whose construction runs code) is refused before it is looked up, so a
    crafted batch cannot run code (Python's "restricting globals")."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never does")
        return super().find_class(module, name)


def _unpickle(path: Path):
    """A CIFAR file's content, or DatasetNotFoundError when it is not one (refused without running it)."""
    with open(path, "rb") as f:
        try:
            return _ArrayUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise DatasetNotFoundError(f"{path} is not a file of the CIFAR python archive ({err}); not loaded") from None


def _read_cifar_batches(folder: Path, files, label_key):
    xs, ys = [], []
    for name in files:
        batch = _unpickle(folder / name)
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
    return x, torch.from_numpy(np.concatenate(ys))


def _locate_cifar(name: str, root: str | None) -> Path:
    """The folder holding the CIFAR batches, or an error saying where they belong and how to get them."""
    folder_name, train_files, test_file, *_ = _CIFAR[name]
    if root is None:
        raise DatasetNotFoundError(f"dataset {name} needs data.root: a directory holding {folder_name}/")
    folder = Path(root).expanduser() / folder_name
    missing = [f for f in [*train_files, test_file] if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name}: missing {', '.join(missing)} in {folder}. raysearch never downloads data: "
            f"get the 'python version' archive from {_CIFAR_URL} and extract it into {Path(root).expanduser()} "
            f"so that {folder}/ holds {', '.join([*train_files, test_file])}."
        )
    return folder


def root_unset(dataset: str, root: str | None) -> bool:
    """A dataset read from files whose config names no directory: a shipped GPU config is a template
    that each machine completes with `--set data.root=DIR`."""
    return root is None and not DATASETS[dataset].embedded


def check_available(dataset: str, root: str | None) -> None:
    """Raise DatasetNotFoundError now, before any resource is taken, if the files are missing."""
    if dataset in _CIFAR:
        _locate_cifar(dataset, root)
    elif dataset == "imagefolder":
        scan_imagefolder(root)  # the layout only: listing files, decoding none


def load_cifar(name: str, root: str | None) -> RawData:
    folder = _locate_cifar(name, root)
    _, train_files, test_file, label_key, classes, names = _CIFAR[name]
    x, y = _read_cifar_batches(folder, train_files, label_key)
    test_x, test_y = _read_cifar_batches(folder, [test_file], label_key)
    return RawData(x, y, test_x, test_y, DataShape(in_channels=3, image_size=32, num_classes=classes,
                                                   classes=_cifar_classes(folder, *names, classes)))


def _cifar_classes(folder: Path, meta: str, key: str, count: int) -> tuple[str, ...] | None:
    """The class names of the archive's meta file; None (labels "0", "1", ...) when it is missing or
    does not name `count` classes."""
    try:
        names = _unpickle(folder / meta)[key]
    except (OSError, KeyError, TypeError, DatasetNotFoundError):
        return None
    return tuple(map(str, names)) if len(names) == count else None


@dataclass(frozen=True)
class DatasetEntry:
    config_type: type  # frozen dataclass of the dataset's own options (`data:` fields beside `dataset`)
    load: object  # (root, options) -> RawData
    embedded: bool = False  # built in memory (scikit-learn's digits); False: read from files under data.root


DATASETS = Registry("dataset", {
    "digits": DatasetEntry(NoOptions, load_digits, embedded=True),
    "digits_hard": DatasetEntry(DigitsHardConfig, load_digits_hard, embedded=True),
    "cifar10": DatasetEntry(NoOptions, lambda root=None, options=None: load_cifar("cifar10", root)),
    "cifar100": DatasetEntry(NoOptions, lambda root=None, options=None: load_cifar("cifar100", root)),
    "imagefolder": DatasetEntry(ImageFolderConfig, load_imagefolder),
})
