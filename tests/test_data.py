import pickle

import numpy as np
import pytest
import torch

from raysearch.config import DataConfig
from raysearch.data import BatchStream, DatasetNotFoundError, check_available, load_splits


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


def _write_cifar(root, name, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels", 10
        test_name = "test_batch"
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train"], "fine_labels", 100
        test_name = "test"
    folder.mkdir(parents=True)
    for name_, n in [(f, n_train) for f in files] + [(test_name, n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: rng.integers(0, classes, n).tolist()}
        with open(folder / name_, "wb") as f:
            pickle.dump(batch, f)


@pytest.mark.parametrize("name, classes, n_train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_reads_the_on_disk_format(tmp_path, name, classes, n_train):
    _write_cifar(tmp_path, name)
    splits = load_splits(DataConfig(dataset=name, root=str(tmp_path)))
    assert splits.shape.num_classes == classes and splits.shape.in_channels == 3
    assert len(splits.test[0]) == 10  # the official test set is used as is
    assert len(splits.train[0]) + len(splits.val[0]) == n_train
    assert splits.train[0].shape[1:] == (3, 32, 32)


def test_cifar_missing_or_incomplete_directory_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data.root"):
        check_available("cifar10", None)
    with pytest.raises(DatasetNotFoundError) as err:
        check_available("cifar10", str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "cs.toronto.edu" in str(err.value)
    _write_cifar(tmp_path, "cifar10")
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
