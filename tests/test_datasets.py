"""Image readers: IDX (gz or not), CIFAR-10 pickles (safe), digits and the splits."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from graphnfn.datasets import (
    DatasetFormatError, UnsafePickleError, load_cifar10, load_dataset, load_digits, load_idx_dataset, read_cifar_batch,
    read_idx,
)


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    code = {np.uint8: 0x08, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 5) * 7 % 251).astype(dtype).reshape(2, 3, 5)
    write_idx(tmp_path / "a", array, gz)
    out = read_idx(tmp_path / "a")
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetFormatError, match="bad-idx.*not an IDX"):
        read_idx(bad)
    write_idx(tmp_path / "short", np.zeros((4, 2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DatasetFormatError, match="short.*header says"):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(DatasetFormatError, match="broken.gz.*gzip"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


def make_idx_dir(root, n_train=40, n_test=10, size=6, gz=True):
    rng = np.random.default_rng(0)
    parts = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{part}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{part}-labels-idx1-ubyte{suffix}", labels, gz)
        parts[part] = images, labels
    return parts


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_and_literature_split(tmp_path, gz):
    parts = make_idx_dir(tmp_path, gz=gz)
    data = load_idx_dataset("fashion-mnist", tmp_path)
    assert data.images.shape == (50, 1, 6, 6) and data.images.dtype == torch.float32
    assert torch.equal(data.images[:40, 0], torch.from_numpy(parts["train"][0]).float() / 255)
    assert torch.equal(data.labels[40:], torch.from_numpy(parts["t10k"][1]).long())
    # splits partition everything; the image test set sits in the INR test split, val comes from the train set
    every = torch.cat(list(data.splits.values())).sort().values
    assert torch.equal(every, torch.arange(50))
    assert set(range(40, 50)) <= set(data.splits["test"].tolist())
    assert data.splits["val"].max() < 40
    assert torch.equal(data.train_test["test"], torch.arange(40, 50))
    # the default path and a missing file: a clear error naming what is missing
    os.remove(tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else "")))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", tmp_path)


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_digits(), load_digits()
    assert a.images.shape == (1797, 1, 8, 8) and float(a.images.max()) == 1.0
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sizes == {"train": 1257, "val": 179, "test": 361}
    assert all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)
    assert torch.equal(torch.cat(list(a.splits.values())).sort().values, torch.arange(1797))
    assert torch.equal(a.train_test["test"], a.splits["test"])
    assert a.num_classes == 10 and a.shape == (1, 8, 8)


def cifar_dict(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_safe_load(tmp_path, protocol):
    d = cifar_dict()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    images, labels = read_cifar_batch(path)
    assert images.shape == (4, 3, 32, 32)
    assert torch.equal(labels, torch.tensor(d[b"labels"]))
    # channel-major rows: the first 1024 values are the red plane
    assert torch.equal(images[1, 0].flatten(), torch.from_numpy(d[b"data"][1, :1024]).float() / 255)


def test_cifar10_directory(tmp_path):
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (tmp_path / name).write_bytes(pickle.dumps(cifar_dict(3, i), protocol=2))
    data = load_cifar10(tmp_path)
    assert data.images.shape == (18, 3, 32, 32) and len(data.train_test["test"]) == 3


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_pickle_with_code_is_refused_before_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(str(marker)), b"labels": [1]}, protocol=2))
    with pytest.raises(UnsafePickleError, match="data_batch_1.*refused.*open.*nothing was run"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_cifar_bad_content(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetFormatError, match="test_batch.*3072"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps(cifar_dict())[:50])
    with pytest.raises(DatasetFormatError, match="test_batch.*truncated"):
        read_cifar_batch(path)


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="mnist.*--data-dir"):
        load_dataset("mnist")
