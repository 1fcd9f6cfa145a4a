"""Tiny zoos written file for file in the layouts their authors published, with plain torch /
numpy / csv (never graphnfn's zoo writer), for the readers' and the experiments' tests.

* Small CNN Zoo (google-research/dnn_predict_accuracy README): ``weights.npy`` (one row per
  network and checkpoint, Keras variables flattened), ``metrics.csv.gz`` (the README's
  columns), ``layout.csv`` (``varname,start_idx,end_idx,shape``); NFN's row order file
  (experiments/predict_gen_data_splits/*_split.csv: one index per line, no header).
* NFN SIRENs (AllanYangZhou/nfn, experiments/siren_utils.py and data_utils.SirenDataset):
  ``{prefix}_{label}s/net{index}.pth``, state_dict of ``Siren(outermost_linear=True)``:
  ``net.{0,1}.linear.{weight,bias}``, ``net.2.{weight,bias}``.
* DWSNets INRs (AvivNavon/DWSNets, nn/inr.py and experiments/mnist/generate_data_splits.py):
  ``mnist_png_{training,testing}_{label}_{index}/checkpoints/model_final.pth`` with
  ``seq.{0,1,2}.{weight,bias}``; the split JSON holds absolute paths and string labels.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random

import numpy as np
import torch

from graphnfn.zoo import make_cnn, make_siren

STEPS = (0, 1, 86)


def tf_layout(model):
    """Flatten a torch CNN the way the Small CNN Zoo stored its Keras variables."""
    columns, layout, start = [], [], 0
    layers = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for i, m in enumerate(layers):
        kernel = m.weight.permute(2, 3, 1, 0) if m.weight.dim() == 4 else m.weight.T  # TF order
        layer = ("sequential/conv2d" + (f"_{i}" if i else "")) if m.weight.dim() == 4 else "sequential/dense"
        for name, value in ((f"{layer}/kernel:0", kernel), (f"{layer}/bias:0", m.bias)):
            flat = value.detach().reshape(-1)
            layout.append({"varname": name, "start_idx": start, "end_idx": start + flat.numel(),
                           "shape": str(tuple(value.shape))})
            columns.append(flat)
            start += flat.numel()
    return torch.cat(columns).numpy(), layout


def _write_csv(path, table: list[dict], gz: bool) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_small_cnn_zoo(root, n_nets: int = 4, nan_row: int | None = None, steps=STEPS) -> dict:
    """One row per (network, checkpoint step), networks in turn; returns {row: torch model}."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows, metrics, models = [], [], {}
    for net in range(n_nets):
        act = "relu" if net % 2 else "tanh"
        for step in steps:
            model = make_cnn(activation=act, padding=0)
            flat, layout = tf_layout(model)
            if nan_row == len(rows):
                flat = flat.copy()
                flat[3] = np.nan
            models[len(rows)] = model
            rows.append(flat)
            metrics.append({
                "config.activation": act, "config.b_init": "zeros", "config.dataset": "mnist",
                "config.dnn_architecture": "cnn", "config.dropout": 0.1, "config.epochs": 86,
                "config.epochs_between_checkpoints": 20, "config.init_std": 0.05, "config.l2reg": 1e-4,
                "config.learning_rate": 0.01 * (net + 1), "config.num_layers": 3, "config.num_units": 16,
                "config.optimizer": "adam", "config.random_seed": 42, "config.train_fraction": 0.5,
                "config.w_init": "he_normal", "modeldir": f"/tmp/model_dir/{net}", "step": step,
                "test_accuracy": 0.1 + 0.8 * net / n_nets + step / 1000, "test_loss": 1.0,
                "train_accuracy": 0.5, "train_loss": 0.9})
    np.save(root / "weights.npy", np.stack(rows).astype(np.float32))
    _write_csv(root / "metrics.csv.gz", metrics, gz=True)
    _write_csv(root / "layout.csv", layout, gz=False)
    return models


def write_nfn_order(path, n_rows: int, seed: int = 0) -> list[int]:
    """NFN's fixed row order of a Small CNN Zoo: a permutation, one index per line."""
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    path.write_text("".join(f"{i}\n" for i in order))
    return order


def _siren_state(seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    siren = make_siren()
    return siren, siren.state_dict()


def write_nfn_sirens(root, entries: dict[int, int], prefix: str = "randinit_smaller") -> dict:
    """``entries``: {index: label}; returns {index: our SIREN with the same function}. An augmented
    copy folder (``{prefix}_aug0_{label}s``) sits beside, as in NFN's data."""
    originals = {}
    for index, label in entries.items():
        folder = root / f"{prefix}_{label}s"
        folder.mkdir(parents=True, exist_ok=True)
        siren, sd = _siren_state(index)
        torch.save({"net.0.linear.weight": sd["0.weight"], "net.0.linear.bias": sd["0.bias"],
                    "net.1.linear.weight": sd["2.weight"], "net.1.linear.bias": sd["2.bias"],
                    "net.2.weight": sd["4.weight"], "net.2.bias": sd["4.bias"]}, folder / f"net{index}.pth")
        originals[index] = siren
    aug = root / f"{prefix}_aug0_1s"
    aug.mkdir(exist_ok=True)
    torch.save({}, aug / "net99999.pth")
    return originals


def write_dwsnets_inrs(root, n_train: int, n_test: int) -> dict:
    """INR folders as DWSNets' data; returns {path: (our SIREN, label, "training"|"testing")}."""
    originals = {}
    for part, n in (("training", n_train), ("testing", n_test)):
        for idx in range(n):
            label = (idx * 3) % 10
            folder = root / f"mnist_png_{part}_{label}_{idx}" / "checkpoints"
            folder.mkdir(parents=True)
            siren, sd = _siren_state(len(originals))
            torch.save({f"seq.{i}.{role}": sd[f"{2 * i}.{role}"] for i in range(3) for role in ("weight", "bias")},
                       folder / "model_final.pth")
            originals[str(folder / "model_final.pth")] = (siren, label, part)
    return originals


def write_dwsnets_splits(path, originals: dict, val: int, moved_to: str | None = None) -> None:
    """Their split JSON: {split: {"path": [...], "label": [str, ...]}}, the first ``val`` training
    INRs as val; ``moved_to``: write the paths as another machine's (their last three parts kept)."""
    splits = {s: {"path": [], "label": []} for s in ("train", "val", "test")}
    seen_train = 0
    for p, (_, label, part) in originals.items():
        split = "test" if part == "testing" else "val" if seen_train < val else "train"
        seen_train += part == "training"
        splits[split]["path"].append(f"{moved_to}/" + "/".join(p.split("/")[-3:]) if moved_to else p)
        splits[split]["label"].append(str(label))
    path.write_text(json.dumps(splits))
