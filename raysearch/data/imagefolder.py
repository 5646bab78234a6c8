"""imagefolder: any local directory of class folders, decoded once into memory (and cached on disk)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysearch.data.raw import DatasetNotFoundError, RawData
from raysearch.schema import spec
from raysearch.shapes import DataShape


@dataclass(frozen=True)
class ImageFolderConfig:
    """imagefolder: a local directory of class folders, every image resized to a square and kept in memory."""

    image_size: int = spec(32, ge=8)  # side the images are resized to (bilinear, antialiased; aspect ratio not kept)
    channels: int = spec(3, choices=(3, 1))  # 3: RGB, 1: grayscale (every image is converted to it)
    cache: bool = True  # keep the decoded images in ROOT/.raysearch_cache/ (rebuilt when a file changes)


_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_IMAGEFOLDER_LAYOUT = (
    "ROOT/train/<class>/<image>.png (png, jpg, jpeg, bmp, gif or webp), optionally ROOT/test/<class>/ or "
    "ROOT/val/<class>/ as the test set; or ROOT/<class>/<image>.png without a split"
)


def _imagefolder_error(problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"data.root: {problem}. imagefolder expects {_IMAGEFOLDER_LAYOUT}.")


def _visible(path: Path) -> bool:
    # Hidden entries are never data: the cache folder, .DS_Store, macOS "._x.png" resource forks (not images).
    return not path.name.startswith(".")


def _class_folders(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise _imagefolder_error(f"no class folders in {folder}")
    return classes


def _image_files(folder: Path, names: list[str], classes: list[str]) -> list[tuple[Path, int]]:
    """(file, label) of every image directly inside folder/<name>/, in a fixed (sorted) order."""
    pairs = []
    for name in names:
        files = sorted(p for p in (folder / name).iterdir()
                       if p.suffix.lower() in _IMAGE_EXTENSIONS and _visible(p) and p.is_file())
        if not files:
            raise _imagefolder_error(f"no images in the class folder {folder / name}")
        pairs += [(f, classes.index(name)) for f in files]
    return pairs


def scan_imagefolder(root: str | None) -> tuple[Path, list[str], dict[str, list[tuple[Path, int]]]]:
    """The root, the class names (train's class folders, sorted; labels index them) and each split's
    (file, label) list ("train", and "test" when the directory has one), checked without decoding."""
    if root is None:
        raise _imagefolder_error("not set; dataset imagefolder needs the directory of the images")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise _imagefolder_error(f"{base} is not a directory")
    train = base / "train"
    held_out = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if not train.is_dir():
        if held_out is not None:  # ROOT itself as train would make test/ (or val/) a class: surely a mistake
            raise _imagefolder_error(f"{base} has {held_out.name}/ but no train/")
        train = base
    classes = _class_folders(train)
    if len(classes) < 2:
        raise _imagefolder_error(f"one class folder in {train} ({classes[0]}); a classifier needs at least 2")
    files = {"train": _image_files(train, classes, classes)}
    if held_out is not None:
        names = _class_folders(held_out)
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise _imagefolder_error(f"{held_out / unknown[0]} is not a class of {train} (its classes: "
                                     f"{', '.join(classes)})")
        files["test"] = _image_files(held_out, names, classes)
    return base, classes, files


def _decode_image(path: Path, size: int, mode: str) -> np.ndarray:
    """One image as uint8 [H, W] (mode L) or [H, W, 3] (mode RGB), resized to size x size."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # PIL's bilinear resize widens its filter when it shrinks, so downscaling is antialiased.
            image = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise _imagefolder_error(f"cannot read the image {path} ({err})") from None


def _decode_split(pairs: list[tuple[Path, int]], size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    mode = "RGB" if channels == 3 else "L"
    images = np.stack([_decode_image(path, size, mode) for path, _ in pairs])
    images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)  # -> [N, C, H, W]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.tensor([label for _, label in pairs])


def _cache_file(base: Path, files: dict, o: ImageFolderConfig) -> Path:
    """The cache's path, named by a hash of what the decoded tensors depend on: every file's path,
    label, size and modification time, and the options. A changed, added or removed file, or other
    options, give another name, so a stale cache is never read."""
    digest = hashlib.sha256(f"v1 {o.image_size} {o.channels}\n".encode())
    for split, pairs in files.items():
        for path, label in pairs:
            st = path.stat()
            digest.update(f"{split} {path.relative_to(base).as_posix()} {label} {st.st_size} "
                          f"{st.st_mtime_ns}\n".encode())
    return base / ".raysearch_cache" / f"imagefolder-{o.image_size}px-{o.channels}ch-{digest.hexdigest()[:16]}.pt"


def _write_cache(path: Path, tensors: dict) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        torch.save(tensors, tmp)
        os.replace(tmp, path)  # atomic: trials loading at the same time read a whole file or none
        # Older caches of the same options describe files that changed; other options' caches stay
        # (a sweep over data.image_size keeps one per size).
        for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as err:  # e.g. a read-only data directory: load anyway, decode again next time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"imagefolder: cannot cache the decoded images in {path.parent} ({err}); "
                      f"every load decodes them again (or set data.cache: false)", stacklevel=2)


def load_imagefolder(root: str | None, options: ImageFolderConfig = ImageFolderConfig()) -> RawData:
    """A local directory of class folders, laid out as ROOT/train/<class>/<image>.

    Classes are train's subfolder names in sorted order (labels their index); the images directly
    inside them (png, jpg, jpeg, bmp, gif, webp in any case; hidden files and subfolders ignored) are
    converted to RGB or grayscale and resized to image_size x image_size. ROOT/test/, else ROOT/val/,
    is the official test set, never used by a search (which carves its search-val from train); its
    class folders must be among train's. Without either, data.test_fraction of train is carved off as
    test. Without train/, ROOT's own class folders are the train set (the common unsplit layout).

    The whole set is decoded into memory (float32, N x C x image_size^2 x 4 bytes), as every dataset
    here is: a large set needs a small image_size, or a subset on disk. With `cache`, the decoded uint8
    tensors (a quarter of that) are saved in ROOT/.raysearch_cache/, so later loads (every trial's)
    skip decoding; any change to the files rebuilds it. A read-only ROOT only warns."""
    base, classes, files = scan_imagefolder(root)
    o = options
    cache = _cache_file(base, files, o) if o.cache else None
    tensors = None
    if cache is not None and cache.is_file():
        try:
            tensors = torch.load(cache, weights_only=True)
        except Exception:  # unreadable cache (another torch version, a damaged file): decode instead
            tensors = None
    if tensors is None:
        tensors = {}
        for split, pairs in files.items():
            tensors[f"{split}_x"], tensors[f"{split}_y"] = _decode_split(pairs, o.image_size, o.channels)
        if cache is not None:
            _write_cache(cache, tensors)
    to_float = lambda t: None if t is None else t.float().div_(255.0)  # noqa: E731
    return RawData(to_float(tensors["train_x"]), tensors["train_y"], to_float(tensors.get("test_x")),
                   tensors.get("test_y"), DataShape(in_channels=o.channels, image_size=o.image_size,
                                                    num_classes=len(classes), classes=tuple(classes)))
