"""Readers for zoos people already have, in their published layouts (sources, files and
columns: docs/zoos.md), and :func:`open_zoo`, which recognises a layout by its files.

* :class:`SmallCNNZoo` (Unterthiner et al., 2020): ``weights.npy`` [rows, 4970]
  (one row per network and checkpoint, parameters flattened in TensorFlow
  order), ``metrics.csv.gz`` (one row per weights row: ``step`` = epoch of the
  checkpoint, ``test_accuracy``, ``train_accuracy``, losses, ``config.*``
  hyperparameters) and ``layout.csv`` (``varname``, ``start_idx``,
  ``end_idx``, ``shape``: which columns hold which TF variable); optionally
  NFN's row order (``predict_gen_data_splits/<dataset>_split.csv``).
* :class:`DWSNetsINRZoo` (Navon et al., 2023): one checkpoint per INR,
  ``mnist_png_{training|testing}_{label}_{index}/checkpoints/model_final.pth``
  with keys ``seq.{0,1,2}.{weight,bias}``, and optionally their split file
  ``{"train"|"val"|"test": {"path": [...], "label": [...]}}``. Their INR adds
  0.5 to its output (records carry ``output_offset``).
* :class:`NFNSirenZoo` (Zhou et al., 2023): ``{prefix}_{label}s/net{index}.pth``
  with keys ``net.{0,1}.linear.{weight,bias}``, ``net.2.{weight,bias}``;
  split by index at (45000, 50000) as their configs do.

Checkpoints are read by :func:`converters.load_checkpoint` (torch's weights-only
unpickler: a pickle that would run code is refused). Weights come back in the
layout of :func:`graphnfn.zoo.siren.make_siren` / :func:`graphnfn.zoo.cnn.make_cnn`.
"""
from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from converters import load_checkpoint

from .siren import SIREN_WIDTHS, siren_keys
from .source import Zoo, ZooSource

#: NFN's INR split points (experiments/classify_siren_configs/dset/*.yaml).
NFN_SPLIT_POINTS = (45_000, 50_000)
DWSNETS_VAL_SIZE = 5000
FINAL_EPOCH = 86  # the Small CNN Zoo trained 86 epochs


class PublishedFormatError(ValueError):
    """A file that does not follow the published layout it was read as."""


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    return list(csv.DictReader(io.StringIO(text)))


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _nfn_iid_split(n: int) -> list[str]:
    """NFN's Small CNN Zoo split (``ZooDataset._split_indices_iid``): the last half is test; the
    first half, shuffled by Python's ``random.Random(0)``, is 80 % train and 20 % val."""
    half = n // 2
    order = list(range(half))
    random.Random(0).shuffle(order)
    names = ["test"] * n
    for rank, i in enumerate(order):
        names[i] = "train" if rank < int(0.8 * half) else "val"
    return names


class SmallCNNZoo(ZooSource):
    """The Small CNN Zoo in ``root`` at one checkpoint epoch.

    Args:
        epoch: the ``step`` to keep (0, 1, 2, 3, 20, 40, 60, 80 or 86 in the
            published files; default the final 86); ``None`` keeps every row.
        drop_nonfinite: skip rows with NaN/Inf weights (diverged runs).
        order: NFN's row order file (one row index per line, no header), applied
            before the epoch filter and the split, so the split is NFN's exactly;
            None: the rows in file order.
    Records: ``label`` = test accuracy (the generalisation target; rank it with
    Kendall's tau), ``metrics`` (train/test accuracy and loss), ``hparams`` (the
    ``config.*`` columns without the prefix), ``epoch``, ``row`` (in weights.npy),
    ``split`` (NFN's: last half test, first half 80/20 train/val)."""

    def __init__(self, root: str | os.PathLike, epoch: int | None = FINAL_EPOCH, drop_nonfinite: bool = True,
                 order: str | os.PathLike | None = None):
        self.root = Path(root)
        weights_path = self.root / "weights.npy"
        if not weights_path.is_file():
            raise FileNotFoundError(f"{weights_path} does not exist")
        self.weights = np.load(weights_path, mmap_mode="r", allow_pickle=False)
        metrics = _read_csv(self.root / "metrics.csv.gz")
        self.layout = self._read_layout(self.root / "layout.csv")
        if self.weights.ndim != 2 or len(metrics) != self.weights.shape[0]:
            raise PublishedFormatError(f"{self.root}: weights.npy has shape {self.weights.shape} but metrics.csv.gz "
                                       f"has {len(metrics)} rows (expected one row per weights row)")
        rows = self._read_order(Path(order), len(metrics)) if order is not None else range(len(metrics))
        rows = [i for i in rows if epoch is None or int(float(metrics[i]["step"])) == epoch]
        if drop_nonfinite:
            rows = [i for i in rows if np.isfinite(self.weights[i]).all()]
        splits = _nfn_iid_split(len(rows))
        self.rows = rows
        self.records = [self._record(j, i, metrics[i], splits[j]) for j, i in enumerate(rows)]
        dataset = self.records[0]["hparams"].get("dataset") if self.records else None
        self.config = {"kind": "cnn", "source": "small-cnn-zoo", "dataset": dataset, "hparams": {}}

    @staticmethod
    def _read_order(path: Path, n_rows: int) -> list[int]:
        try:
            order = [int(line) for line in path.read_text().split()]
        except ValueError as err:
            raise PublishedFormatError(f"{path}: expected one row index per line: {err}") from err
        if sorted(order) != list(range(n_rows)):
            raise PublishedFormatError(f"{path}: not an order of the {n_rows} rows of weights.npy "
                                       f"({len(order)} indices)")
        return order

    def _read_layout(self, path: Path) -> list[tuple[str, int, int, tuple[int, ...]]]:
        layout = []
        for row in _read_csv(path):
            try:
                name, start, end = row["varname"], int(row["start_idx"]), int(row["end_idx"])
                shape = tuple(ast.literal_eval(row["shape"]))
            except (KeyError, ValueError, SyntaxError) as err:
                raise PublishedFormatError(f"{path}: expected columns varname, start_idx, end_idx, shape; row {row}: {err}") from err
            if end - start != int(np.prod(shape)):
                raise PublishedFormatError(f"{path}: {name} spans {end - start} columns but has shape {shape}")
            if not name.endswith(("kernel:0", "bias:0")):
                raise PublishedFormatError(f"{path}: variable {name!r} is neither a kernel nor a bias")
            layout.append((name, start, end, shape))
        if len(layout) % 2 or not all(layout[2 * i][0].endswith("kernel:0") and layout[2 * i + 1][0].endswith("bias:0")
                                      for i in range(len(layout) // 2)):
            raise PublishedFormatError(f"{path}: expected kernel/bias pairs in order, got {[v[0] for v in layout]}")
        return layout

    def _record(self, j: int, row: int, m: dict[str, str], split: str) -> dict:
        hparams = {k[len("config."):]: _number(v) for k, v in m.items() if k.startswith("config.")}
        metrics = {k: float(m[k]) for k in ("train_accuracy", "train_loss", "test_accuracy", "test_loss") if k in m}
        arch = {"name": "cnn", "in_channels": self.layout[0][3][2], "num_classes": self.layout[-1][3][0],
                "activation": hparams.get("activation", "relu"), "dropout": 0.0, "padding": 0,
                "layers": len(self.layout) // 2 - 1, "channels": self.layout[0][3][3]}
        return {"id": j, "row": row, "split": split, "label": metrics.get("test_accuracy"),
                "epoch": int(float(m["step"])), "hparams": hparams, "metrics": metrics, "arch": arch}

    def state_dict(self, i: int) -> dict[str, Tensor]:
        flat = torch.from_numpy(np.array(self.weights[self.rows[i]], dtype=np.float32))
        convs = len(self.layout) // 2 - 1
        state = {}
        for pair in range(len(self.layout) // 2):
            (_, k0, k1, k_shape), (_, b0, b1, _) = self.layout[2 * pair], self.layout[2 * pair + 1]
            kernel = flat[k0:k1].reshape(k_shape)
            # TF kernels: conv [kh, kw, in, out] -> [out, in, kh, kw]; dense [in, out] -> [out, in]
            kernel = kernel.permute(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
            index = 3 * pair if pair < convs else 3 * convs + 2  # make_cnn: (conv, act, dropout) * L, pool, flatten, linear
            state[f"{index}.weight"], state[f"{index}.bias"] = kernel.contiguous(), flat[b0:b1]
        keys = list(self.skeleton(i).state_dict())
        if sorted(keys) != sorted(state) or any(state[k].shape != v.shape for k, v in self.skeleton(i).state_dict().items()):
            raise PublishedFormatError(f"{self.root}/layout.csv does not describe the Small CNN Zoo network "
                                       f"{self.records[i]['arch']}: {[v[0] for v in self.layout]}")
        return {k: state[k] for k in keys}


def _siren_state(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """A 3-layer SIREN checkpoint in any key naming -> :func:`make_siren` keys (by order of its weight/bias pairs)."""
    weights = [k for k in state if k.endswith("weight")]
    biases = [k for k in state if k.endswith("bias")]
    ours = siren_keys(SIREN_WIDTHS)
    if len(weights) != len(SIREN_WIDTHS) - 1 or len(biases) != len(weights):
        raise PublishedFormatError(f"{source}: expected {len(SIREN_WIDTHS) - 1} weight/bias pairs, got keys {list(state)}")
    out = {}
    for layer, (w, b) in enumerate(zip(weights, biases)):
        out[ours[2 * layer]], out[ours[2 * layer + 1]] = state[w], state[b]
        want = (SIREN_WIDTHS[layer + 1], SIREN_WIDTHS[layer])
        if tuple(state[w].shape) != want:
            raise PublishedFormatError(f"{source}: {w} has shape {tuple(state[w].shape)}, expected {want} (out, in)")
    return out


class _INRFiles(ZooSource):
    """INR zoos stored as one checkpoint file per INR."""

    arch = {"name": "siren", "widths": list(SIREN_WIDTHS), "w0": 30.0}
    # every INR fitted from its own random initialisation; the source images are not part of the zoo
    config = {"kind": "siren", "dataset": None, "hparams": {"init": "independent", "w0": 30.0}}

    def state_dict(self, i: int) -> dict[str, Tensor]:
        path = self.records[i]["path"]
        return _siren_state(dict(load_checkpoint(path)), path)


class DWSNetsINRZoo(_INRFiles):
    """The DWSNets MNIST/Fashion-MNIST INR zoo.

    ``root``: the directory holding the ``mnist_png_*`` INR folders, or a split
    JSON file as DWSNets' ``generate_data_splits.py`` writes it (its paths,
    if absolute paths of another machine, are looked up under the JSON's
    directory by their last three or four parts). Without a split file, val is a seeded
    random 5,000 of the training INRs (DWSNets draws it unseeded)."""

    PATTERN = re.compile(r"_(train|training|test|testing)_(\d+)_(\d+)$")

    def __init__(self, root: str | os.PathLike, val_size: int = DWSNETS_VAL_SIZE, seed: int = 0):
        root = self.root = Path(root)
        if root.is_file():
            self.records = self._from_split_file(root)
        else:
            self.records = self._from_directory(root, val_size, seed)

    @staticmethod
    def _entry(i: int, path: Path, split: str, label: int) -> dict:
        return {"id": i, "path": str(path), "split": split, "label": int(label), "output_offset": 0.5,
                "arch": DWSNetsINRZoo.arch}

    def _from_directory(self, root: Path, val_size: int, seed: int) -> list[dict]:
        found = []
        for path in sorted(root.glob("*/**/*.pth")):
            match = self.PATTERN.search(path.parent.parent.name)
            if match:
                found.append((path, "train" if match.group(1).startswith("train") else "test", int(match.group(2))))
        if not found:
            raise FileNotFoundError(f"{root}: no INR checkpoints like mnist_png_training_<label>_<index>/checkpoints/*.pth")
        train = [i for i, f in enumerate(found) if f[1] == "train"]
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        val = {train[j] for j in order[:min(val_size, len(train))]}
        return [self._entry(i, p, "val" if i in val else s, y) for i, (p, s, y) in enumerate(found)]

    def _from_split_file(self, path: Path) -> list[dict]:
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise PublishedFormatError(f"{path}: not a JSON split file: {err}") from err
        records = []
        for split in ("train", "val", "test"):
            part = splits.get(split, {"path": [], "label": []})
            for p, y in zip(part["path"], part["label"]):
                records.append(self._entry(len(records), self._find(Path(p), path.parent), split, int(y)))
        return records

    @staticmethod
    def _find(listed: Path, here: Path) -> Path:
        """A path of the split file, or, written on another machine, the same INR under the split
        file's folder: its last three parts (INR folder/checkpoints/file), or four (with the INR root)."""
        for candidate in (listed, here / Path(*listed.parts[-3:]), here / Path(*listed.parts[-4:])):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{listed} (listed in the split file) does not exist, nor under {here}")


class NFNSirenZoo(_INRFiles):
    """The NFN SIREN zoos (``siren_mnist_wts``, ``siren_fashion_wts``, ``siren_cifar_wts``):
    ``root/{prefix}_{label}s/net{index}.pth``; split by index at ``split_points``."""

    def __init__(self, root: str | os.PathLike, prefix: str = "randinit_smaller",
                 split_points: tuple[int, int] = NFN_SPLIT_POINTS):
        root = self.root = Path(root)
        pattern = re.compile(rf"^{re.escape(prefix)}_(\d)s$")
        by_index = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            match = pattern.match(folder.name)
            if match:
                for path in folder.glob("net*.pth"):
                    index = re.fullmatch(r"net(\d+)\.pth", path.name)
                    if index:
                        by_index[int(index.group(1))] = (path, int(match.group(1)))
        if not by_index:
            raise FileNotFoundError(f"{root}: no INR checkpoints like {prefix}_<label>s/net<index>.pth")
        val_at, test_at = split_points
        self.records = [
            {"id": i, "index": idx, "path": str(path), "label": label, "arch": self.arch,
             "split": "train" if idx < val_at else "val" if idx < test_at else "test"}
            for i, (idx, (path, label)) in enumerate(sorted(by_index.items()))]


def _nfn_prefix(root: Path) -> str | None:
    """The prefix of the NFN SIREN folders ``{prefix}_{label}s`` under ``root``: the one every
    other prefix found extends (augmented copies, ``{prefix}_aug{k}_{label}s``, sit beside)."""
    found = {m.group(1) for p in root.iterdir() if p.is_dir() and (m := re.fullmatch(r"(.+)_\ds", p.name))
             and any(p.glob("net*.pth"))}
    base = [p for p in found if all(q == p or q.startswith(p + "_") for q in found)]
    if found and not base:
        raise PublishedFormatError(f"{root}: INR folders of several NFN prefixes {sorted(found)}; open the one "
                                   "you mean with NFNSirenZoo(root, prefix=...)")
    return base[0] if base else None


def open_zoo(path: str | os.PathLike, kind: str | None = None) -> ZooSource:
    """The zoo at ``path``, in whichever layout its files show: our zoo directory
    (``zoo.json``), the Small CNN Zoo (``weights.npy``), the NFN SIREN zoo
    (``{prefix}_{label}s/net{index}.pth``), the DWSNets INR zoo (``mnist_png_*`` folders)
    or DWSNets' split JSON file. ``kind`` ("siren", "cnn", "transformer"): the kind the
    caller needs; another kind is a ValueError naming both."""
    path = Path(path)
    if path.is_file():
        zoo = DWSNetsINRZoo(path)
    elif not path.is_dir():
        raise FileNotFoundError(f"zoo {str(path)!r} does not exist")
    elif (path / "zoo.json").is_file():
        zoo = Zoo(path)
    elif (path / "weights.npy").is_file():
        zoo = SmallCNNZoo(path)
    elif any(p.is_dir() and DWSNetsINRZoo.PATTERN.search(p.name) for p in path.iterdir()):
        zoo = DWSNetsINRZoo(path)
    elif (prefix := _nfn_prefix(path)) is not None:
        zoo = NFNSirenZoo(path, prefix=prefix)
    else:
        raise PublishedFormatError(
            f"{path}: no zoo layout recognised; expected zoo.json (graphnfn), weights.npy + metrics.csv.gz + "
            "layout.csv (Small CNN Zoo), <prefix>_<label>s/net<index>.pth (NFN SIRENs) or "
            "mnist_png_<split>_<label>_<index>/checkpoints/*.pth (DWSNets INRs)")
    if kind is not None and zoo.config.get("kind") != kind:
        raise ValueError(f"zoo {str(path)!r} is a {zoo.config.get('kind')} zoo; this task needs a {kind} zoo")
    return zoo
