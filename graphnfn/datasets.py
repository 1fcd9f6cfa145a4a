"""Image data sets the zoos are made from, read from files already on disk.

Nothing downloads. The embedded default is scikit-learn's ``load_digits``
(1,797 8x8 images that ship inside scikit-learn); Fashion-MNIST and MNIST are
read from their IDX files (gzipped or not; Debian's ``dataset-fashion-mnist``
puts them in ``/usr/share/datasets/fashion-mnist/``), CIFAR-10 from its python
pickle batches through an unpickler that can only build plain containers and
numpy arrays (a pickle that would import or call anything else is refused
before it runs).

Every loader returns an :class:`ImageData`: images [N, C, H, W] float32 in
[0, 1], labels [N] int64, and two partitions of the indices:

* ``splits`` (train / val / test), the split of the INR-classification
  literature, used by the SIREN zoo: Fashion-MNIST, MNIST and CIFAR-10 follow
  the NFN code (images in the order train set then test set; train = [0, 45000),
  val = [45000, 50000), test = the rest); digits use a fixed seeded 70/10/20 split.
* ``train_test`` (the data set's own train and test sets; for digits the
  seeded train+val and test), used to train and score the classifiers of the
  CNN and transformer zoos.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: NFN's split points over the concatenated train+test images (experiments/classify_siren_configs).
LITERATURE_SPLIT_POINTS = (45_000, 50_000)
DIGITS_SPLIT_SEED = 0  # fixed, so every digits zoo (whatever its --seed) shares one split
DIGITS_FRACTIONS = (0.7, 0.1)  # train, val; the rest is test
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DatasetFormatError(ValueError):
    """A data file that is missing, truncated or not in the expected format."""


class UnsafePickleError(DatasetFormatError):
    """A pickle that would import or call something other than plain containers and numpy arrays."""


@dataclass
class ImageData:
    name: str
    images: Tensor  # [N, C, H, W] float32 in [0, 1]
    labels: Tensor  # [N] int64
    splits: dict[str, Tensor]  # INR-zoo split: "train" / "val" / "test" -> indices
    train_test: dict[str, Tensor]  # the data set's own "train" / "test" -> indices (classifier zoos)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DatasetFormatError(f"{path}: gzip stream is corrupt or truncated: {err}") from err
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST's format, gzipped or not) as a numpy array of its own dtype and shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = _open_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()!r}; expected 0000 <dtype> <ndim>)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DatasetFormatError(f"{path}: IDX header says shape {shape} ({need} bytes of data), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{stem}[.gz] not found in {str(root)!r}" + (
        " (on Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if root == FASHION_MNIST_DIR else ""))


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Images [N, 1, H, W] float32 in [0, 1] and labels [N] int64 from two IDX files."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetFormatError(f"{images_path}, {labels_path}: expected images [N, H, W] and labels [N], "
                                 f"got {images.shape} and {labels.shape}")
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], torch.from_numpy(labels.astype(np.int64))


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only what CIFAR batches hold: dicts, lists, bytes, numbers and numpy arrays
    (numpy's array reconstructors, dtype, and the bytes codec are the only globals allowed)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 0-2 pickles written by Python 3 spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"refused to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``): images
    [N, 3, 32, 32] float32 in [0, 1] and labels [N] int64. Loaded with an
    unpickler that refuses any global but numpy's array constructors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch {str(path)!r} does not exist")
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}; nothing was run") from None
    except Exception as err:  # pickle raises many types for damaged input
        raise DatasetFormatError(f"{path}: not a readable CIFAR pickle (truncated or corrupt?): {err}") from err
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: holds a {type(obj).__name__}, expected a dict with 'data' and 'labels'")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
            or len(labels) != len(data):
        raise DatasetFormatError(f"{path}: expected 'data' uint8 [N, 3072] and N 'labels'; got keys {sorted(obj)}")
    images = torch.from_numpy(data.astype(np.float32).reshape(-1, 3, 32, 32) / 255.0)
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _literature_splits(n_train: int, n_total: int) -> dict[str, Tensor]:
    val_at, test_at = LITERATURE_SPLIT_POINTS
    if n_train < test_at:  # small files (tests): keep NFN's proportions inside the train set
        val_at, test_at = int(n_train * 0.75), int(n_train * 0.85)
    return {"train": torch.arange(val_at), "val": torch.arange(val_at, test_at), "test": torch.arange(test_at, n_total)}


def _from_train_test(name: str, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> ImageData:
    n_train, n_total = len(train[1]), len(train[1]) + len(test[1])
    return ImageData(name, torch.cat([train[0], test[0]]), torch.cat([train[1], test[1]]),
                     _literature_splits(n_train, n_total),
                     {"train": torch.arange(n_train), "test": torch.arange(n_train, n_total)})


def load_idx_dataset(name: str, root: str | os.PathLike) -> ImageData:
    """MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` ... ``t10k-labels-idx1-ubyte[.gz]``) in ``root``."""
    root = Path(root)
    parts = {part: read_idx_pair(_find(root, img), _find(root, lab)) for part, (img, lab) in IDX_PARTS.items()}
    return _from_train_test(name, parts["train"], parts["test"])


def load_cifar10(root: str | os.PathLike) -> ImageData:
    """CIFAR-10 from ``root/data_batch_{1..5}`` and ``root/test_batch`` (python pickle batches)."""
    root = Path(root)
    batches = [read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    train = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    return _from_train_test("cifar10", train, read_cifar_batch(root / "test_batch"))


def load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0, 1]) with a fixed seeded split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_train, n_val = (int(f * len(labels)) for f in DIGITS_FRACTIONS)
    splits = {"train": order[:n_train].sort().values, "val": order[n_train:n_train + n_val].sort().values,
              "test": order[n_train + n_val:].sort().values}
    return ImageData("digits", images, labels, splits,
                     {"train": torch.cat([splits["train"], splits["val"]]).sort().values, "test": splits["test"]})


DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")


def load_dataset(name: str, root: str | os.PathLike | None = None) -> ImageData:
    """``digits`` (embedded), ``fashion-mnist`` (default root /usr/share/datasets/fashion-mnist),
    ``mnist`` or ``cifar10`` (root required)."""
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_idx_dataset(name, root or FASHION_MNIST_DIR)
    if name in ("mnist", "cifar10"):
        if root is None:
            raise ValueError(f"data set {name!r} needs a directory (--data-dir) holding its files")
        return load_idx_dataset(name, root) if name == "mnist" else load_cifar10(root)
    raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
