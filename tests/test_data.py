import pytest
import torch

from raysearch.config import DataConfig
from raysearch.data import DATASETS, BatchStream, DatasetNotFoundError, check_available, load_splits, root_unset
from tests.helpers import write_cifar


def test_digits_splits_are_disjoint_fixed_and_normalised(digits):
    sizes = [len(s[0]) for s in (digits.train, digits.val, digits.test)]
    assert sum(sizes) == 1797 and sizes[2] == round(1797 * 0.2)
    again = load_splits(DataConfig(val_fraction=0.25))
    assert torch.equal(again.test[0], digits.test[0])
    rows = {tuple(x.flatten().tolist()) for split in (digits.train, digits.val, digits.test) for x in split[0]}
    assert len(rows) > 1700  # digits has a handful of duplicate images, splits do not overlap beyond that
    assert abs(digits.train[0].mean().item()) < 1e-4
    assert digits.shape.num_classes == 10 and digits.train[0].shape[1:] == (1, 8, 8)


def test_batch_stream_resumes_with_the_same_batches():
    x, y = torch.arange(50).float().view(50, 1), torch.arange(50)
    a = BatchStream(x, y, 8, seed=3)
    first = [next(a)[1] for _ in range(9)]  # crosses a pass boundary (6 batches per pass)
    b = BatchStream(x, y, 8, seed=3)
    b.load_state_dict({"consumed": 4})
    assert all(torch.equal(u, v) for u, v in zip(first[4:], [next(b)[1] for _ in range(5)]))
    assert not torch.equal(first[0], first[6])  # a new permutation per pass


@pytest.mark.parametrize("name, classes, n_train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_reads_the_on_disk_format(tmp_path, name, classes, n_train):
    write_cifar(tmp_path, name)
    splits = load_splits(DataConfig(dataset=name, root=str(tmp_path)))
    assert splits.shape.num_classes == classes and splits.shape.in_channels == 3
    assert len(splits.test[0]) == 10  # the official test set is used as is
    assert len(splits.train[0]) + len(splits.val[0]) == n_train
    assert splits.train[0].shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_dataset_needs_data_root_exactly_when_it_is_not_embedded(name):
    """`validate` passes a config with data.root unset only for datasets read from files, which `run` refuses."""
    if DATASETS[name].embedded:
        check_available(name, None)
        assert not root_unset(name, None)
    else:
        with pytest.raises(DatasetNotFoundError, match="data.root"):
            check_available(name, None)
        assert root_unset(name, None) and not root_unset(name, "/data")


def test_cifar_missing_or_incomplete_directory_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data.root"):
        check_available("cifar10", None)
    with pytest.raises(DatasetNotFoundError) as err:
        check_available("cifar10", str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "cs.toronto.edu" in str(err.value)
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_3"):
        load_splits(DataConfig(dataset="cifar10", root=str(tmp_path)))


def test_digits_hard_is_deterministic_and_its_options_are_checked_fields():
    from raysearch.config import ConfigError, from_dict
    from raysearch.data import load_splits
    from raysearch.data.datasets import DigitsHardConfig, load_digits_hard

    a, b = load_digits_hard(), load_digits_hard()
    assert a.x.shape == (1797, 1, 16, 16) and a.shape.image_size == 16
    assert a.x.numpy().tobytes() == b.x.numpy().tobytes() and torch.equal(a.y, b.y)  # the same bytes
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0
    other = load_digits_hard(options=DigitsHardConfig(seed=1))
    assert not torch.equal(a.x, other.x) and torch.equal(a.y, other.y)  # another draw of the same digits
    config = from_dict({"name": "t", "data": {"dataset": "digits_hard", "image_size": 12, "rotation": 10}})
    assert load_splits(config.data).train[0].shape[-1] == 12
    for data, message in [({"rotation": 200}, "data.rotation: must be <= 180"),
                          ({"image_size": 4}, "data.image_size: must be >= 8"),
                          ({"noise": 1}, "data.noise: unknown field; accepted: dataset, root, val_fraction")]:
        with pytest.raises(ConfigError, match=message):
            from_dict({"name": "t", "data": {"dataset": "digits_hard", **data}})
    with pytest.raises(ConfigError, match="data.rotation: unknown field"):  # digits has no such option
        from_dict({"name": "t", "data": {"dataset": "digits", "rotation": 10}})


# imagefolder: a tree of small PNGs, each class a solid colour so that labels can be checked from pixels.
_COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}


def _write_image(path, colour, size):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _write_imagefolder(root, splits=(("train", 6), ("test", 2)), classes=tuple(_COLOURS)):
    for split, n in splits:
        for name in classes:
            for i in range(n):  # sizes differ: every image is resized to data.image_size
                folder = root / split if split else root
                _write_image(folder / name / f"{i}.png", _COLOURS[name], (10 + i, 12 + 2 * i))
    return root


def test_imagefolder_reads_class_folders_and_uses_test_or_val_as_the_test_set(tmp_path):
    from raysearch.data.imagefolder import ImageFolderConfig, load_imagefolder

    root = _write_imagefolder(tmp_path / "pets")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored
    (root / "train" / "cat" / "._0.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    _write_image(root / "train" / "cat" / "UPPER.JPG", _COLOURS["cat"], (9, 9))  # extensions in any case
    raw = load_imagefolder(str(root), ImageFolderConfig(image_size=16))
    assert raw.x.shape == (19, 3, 16, 16) and raw.test_x.shape == (6, 3, 16, 16)
    assert (raw.shape.in_channels, raw.shape.image_size, raw.shape.num_classes) == (3, 16, 3)
    assert raw.y.bincount().tolist() == [7, 6, 6] and raw.test_y.bincount().tolist() == [2, 2, 2]
    for x, y in [(raw.x, raw.y), (raw.test_x, raw.test_y)]:  # labels: sorted class names (cat, dog, fox)
        for label, colour in enumerate(_COLOURS.values()):
            assert torch.allclose(x[y == label].mean(dim=(0, 2, 3)), torch.tensor(colour) / 255.0, atol=0.01)

    splits = load_splits(DataConfig(dataset="imagefolder", root=str(root), options=ImageFolderConfig(image_size=16)))
    assert len(splits.test[0]) == 6 and len(splits.train[0]) + len(splits.val[0]) == 19  # test/ as is
    (root / "test").rename(root / "val")  # val/ is the test set when there is no test/
    assert load_imagefolder(str(root), ImageFolderConfig(image_size=16)).test_x.shape[0] == 6

    flat = _write_imagefolder(tmp_path / "flat", splits=(("", 5),), classes=("cat", "dog"))  # ROOT/<class>/
    gray = load_imagefolder(str(flat), ImageFolderConfig(image_size=8, channels=1))
    assert gray.x.shape == (10, 1, 8, 8) and gray.test_x is None and gray.shape.num_classes == 2
    assert 0.0 <= gray.x.min() and gray.x.max() <= 1.0
    splits = load_splits(DataConfig(dataset="imagefolder", root=str(flat), test_fraction=0.2))
    assert len(splits.test[0]) == 2 and splits.shape.in_channels == 3  # test carved off train


def test_imagefolder_caches_decoded_images_until_a_file_changes(tmp_path, monkeypatch):
    import os

    from raysearch.data import imagefolder
    from raysearch.data.imagefolder import ImageFolderConfig, load_imagefolder

    root = _write_imagefolder(tmp_path)
    first = load_imagefolder(str(root), ImageFolderConfig(image_size=16))
    cached = list((root / ".raysearch_cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".pt"

    real_decode = imagefolder._decode_image
    monkeypatch.setattr(imagefolder, "_decode_image", lambda *a: pytest.fail("decoded although cached"))
    again = load_imagefolder(str(root), ImageFolderConfig(image_size=16))  # the cache folder is no class
    assert torch.equal(first.x, again.x) and torch.equal(first.test_y, again.test_y)

    changed = root / "train" / "dog" / "0.png"
    _write_image(changed, (255, 255, 255), (10, 12))
    os.utime(changed, ns=(1, 1))  # another mtime even where the file system's clock is coarse
    with pytest.raises(pytest.fail.Exception, match="decoded although cached"):
        load_imagefolder(str(root), ImageFolderConfig(image_size=16))  # the change is seen: decodes again
    monkeypatch.setattr(imagefolder, "_decode_image", real_decode)
    rebuilt = load_imagefolder(str(root), ImageFolderConfig(image_size=16))
    assert not torch.equal(first.x, rebuilt.x)
    assert [p.name for p in (root / ".raysearch_cache").iterdir()] != [cached[0].name]  # the stale one is gone
    assert len(list((root / ".raysearch_cache").iterdir())) == 1

    load_imagefolder(str(root), ImageFolderConfig(image_size=8))  # other options: a cache of their own
    assert len(list((root / ".raysearch_cache").iterdir())) == 2
    other = _write_imagefolder(tmp_path / "uncached")
    load_imagefolder(str(other), ImageFolderConfig(cache=False))
    assert not (other / ".raysearch_cache").exists()


def test_imagefolder_errors_name_data_root_the_path_and_the_layout(tmp_path):
    from raysearch.data.imagefolder import ImageFolderConfig

    layout = "ROOT/train/<class>/<image>.png"
    cases = [(None, "data.root: not set")]
    cases.append((tmp_path / "nowhere", f"{tmp_path / 'nowhere'} is not a directory"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", f"no class folders in {tmp_path / 'empty'}"))
    one = _write_imagefolder(tmp_path / "one", splits=(("train", 2),), classes=("cat",))
    cases.append((one, f"one class folder in {one / 'train'}"))
    no_images = _write_imagefolder(tmp_path / "no_images", splits=(("train", 2),))
    (no_images / "train" / "owl").mkdir()
    cases.append((no_images, f"no images in the class folder {no_images / 'train' / 'owl'}"))
    stray = _write_imagefolder(tmp_path / "stray", splits=(("train", 2),), classes=("cat", "dog"))
    _write_image(stray / "test" / "fox" / "0.png", _COLOURS["fox"], (10, 10))
    cases.append((stray, f"{stray / 'test' / 'fox'} is not a class of {stray / 'train'}"))
    val_only = _write_imagefolder(tmp_path / "val_only", splits=(("val", 2),))
    cases.append((val_only, "has val/ but no train/"))
    for root, message in cases:  # all checked before any resource is taken, nothing decoded
        with pytest.raises(DatasetNotFoundError) as err:
            check_available("imagefolder", None if root is None else str(root))
        assert message in str(err.value) and "data.root" in str(err.value) and layout in str(err.value)

    broken = _write_imagefolder(tmp_path / "broken", splits=(("train", 2),))
    (broken / "train" / "dog" / "1.png").write_bytes(b"not a png")
    check_available("imagefolder", str(broken))  # the layout is right; only decoding finds the bad file
    with pytest.raises(DatasetNotFoundError, match=f"cannot read the image {broken / 'train' / 'dog' / '1.png'}"):
        load_splits(DataConfig(dataset="imagefolder", root=str(broken), options=ImageFolderConfig(image_size=8)))


def test_imagefolder_options_come_from_the_data_section_of_a_yaml_file(tmp_path):
    from raysearch.config import ConfigError, from_dict, load_config
    from raysearch.data.imagefolder import ImageFolderConfig

    root = _write_imagefolder(tmp_path / "pets")
    (tmp_path / "exp.yaml").write_text(f"name: t\ndata:\n  dataset: imagefolder\n  root: {root}\n"
                                       "  image_size: 12\n  channels: 1\n  cache: false\n")
    config = load_config(tmp_path / "exp.yaml")
    assert config.data.options == ImageFolderConfig(image_size=12, channels=1, cache=False)
    assert load_splits(config.data).train[0].shape[1:] == (1, 12, 12)
    for data, message in [({"channels": 2}, "data.channels: 2 is not one of: 3, 1"),
                          ({"image_size": 4}, "data.image_size: must be >= 8"),
                          ({"size": 4}, "data.size: unknown field; accepted: dataset, root")]:
        with pytest.raises(ConfigError, match=message):
            from_dict({"name": "t", "data": {"dataset": "imagefolder", "root": str(root), **data}})
