"""Readers of the published zoo layouts, on tiny synthetic files written in those layouts."""
import csv
import gzip
import io
import json

import numpy as np
import pytest
import torch

import converters
from graphnfn.zoo import DWSNetsINRZoo, NFNSirenZoo, SmallCNNZoo, make_cnn, make_siren
from graphnfn.zoo.published import PublishedFormatError

STEPS = (0, 1, 86)


def tf_layout(model):
    """Flatten a torch CNN the way the Small CNN Zoo stored its Keras variables."""
    columns, layout, start = [], [], 0
    convs = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for i, m in enumerate(convs):
        kernel = m.weight.permute(2, 3, 1, 0) if m.weight.dim() == 4 else m.weight.T  # TF order
        layer = f"sequential/conv2d_{i}" if m.weight.dim() == 4 else "sequential/dense"
        for name, value in ((f"{layer}/kernel:0", kernel), (f"{layer}/bias:0", m.bias)):
            flat = value.detach().reshape(-1)
            layout.append({"varname": name, "start_idx": start, "end_idx": start + flat.numel(),
                           "shape": str(tuple(value.shape))})
            columns.append(flat)
            start += flat.numel()
    return torch.cat(columns).numpy(), layout


def write_small_cnn_zoo(root, n_nets=4, nan_row=None):
    torch.manual_seed(0)
    rows, metrics, models = [], [], {}
    for net in range(n_nets):
        act = "relu" if net % 2 else "tanh"
        for step in STEPS:
            model = make_cnn(activation=act, padding=0)
            flat, layout = tf_layout(model)
            if nan_row == len(rows):
                flat = flat.copy()
                flat[3] = np.nan
            models[len(rows)] = model
            rows.append(flat)
            metrics.append({"config.activation": act, "config.learning_rate": 0.01 * (net + 1), "config.dropout": 0.1,
                            "config.w_init": "he_normal", "modeldir": f"/tmp/{net}", "step": step,
                            "test_accuracy": 0.1 * net + step / 1000, "train_accuracy": 0.5, "test_loss": 1.0,
                            "train_loss": 0.9})
    np.save(root / "weights.npy", np.stack(rows).astype(np.float32))
    for name, table, gz in (("metrics.csv.gz", metrics, True), ("layout.csv", layout, False)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
        data = buf.getvalue().encode()
        (root / name).write_bytes(gzip.compress(data) if gz else data)
    return models


def test_small_cnn_zoo_reader(tmp_path):
    models = write_small_cnn_zoo(tmp_path, nan_row=5)  # row 5: network 1 at step 86
    zoo = SmallCNNZoo(tmp_path)  # final epoch, diverged rows dropped
    assert [r["epoch"] for r in zoo.records] == [86] * 3
    assert zoo.rows == [2, 8, 11]
    r = zoo.records[1]
    assert r["label"] == pytest.approx(0.2 + 0.086) and r["hparams"]["learning_rate"] == pytest.approx(0.03)
    assert r["arch"]["activation"] == "tanh" and r["metrics"]["train_loss"] == pytest.approx(0.9)
    original = models[8]
    sd = zoo.state_dict(1)
    assert list(sd) == list(original.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in original.state_dict().items())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(zoo.module(1)(x), original(x))
    assert zoo.module(1)[0].padding == (0, 0)  # the published zoo's "valid" convolutions
    converters.to_weight_space(zoo.module(1))
    every = SmallCNNZoo(tmp_path, epoch=None, drop_nonfinite=False)
    assert len(every) == 12 and sorted({r["epoch"] for r in every.records}) == list(STEPS)
    assert {r["split"] for r in every.records} == {"train", "val", "test"}
    assert [r["split"] for r in every.records[6:]] == ["test"] * 6  # NFN's split: last half is test


def test_small_cnn_zoo_bad_files(tmp_path):
    write_small_cnn_zoo(tmp_path)
    good = (tmp_path / "layout.csv").read_text()
    (tmp_path / "layout.csv").write_text(good.replace("(16,)", "(15,)", 1))
    with pytest.raises(PublishedFormatError, match="layout.csv.*bias:0 spans 16 columns but has shape"):
        SmallCNNZoo(tmp_path)
    (tmp_path / "layout.csv").write_text(good)
    np.save(tmp_path / "weights.npy", np.zeros((3, 4970), np.float32))
    with pytest.raises(PublishedFormatError, match="metrics.csv.gz has 12 rows"):
        SmallCNNZoo(tmp_path)


def dws_state(seed):
    """A DWSNets checkpoint: keys seq.{0,1,2}.{weight,bias}."""
    torch.manual_seed(seed)
    siren = make_siren()
    return siren, {f"seq.{i}.{role}": siren.state_dict()[f"{2 * i}.{role}"].clone()
                   for i in range(3) for role in ("weight", "bias")}


def test_dwsnets_directory_and_split_file(tmp_path):
    root = tmp_path / "mnist-inrs"
    originals = {}
    for part, n in (("training", 6), ("testing", 2)):
        for idx in range(n):
            label = (idx * 3) % 10
            folder = root / f"mnist_png_{part}_{label}_{idx}" / "checkpoints"
            folder.mkdir(parents=True)
            siren, sd = dws_state(len(originals))
            torch.save(sd, folder / "model_final.pth")
            originals[str(folder / "model_final.pth")] = (siren, label, part)
    zoo = DWSNetsINRZoo(root, val_size=2)
    assert len(zoo) == 8 and sum(r["split"] == "val" for r in zoo.records) == 2
    assert sum(r["split"] == "test" for r in zoo.records) == 2
    for i, r in enumerate(zoo.records):
        siren, label, part = originals[r["path"]]
        assert r["label"] == label and (r["split"] == "test") == (part == "testing")
        assert all(torch.equal(zoo.state_dict(i)[k], v) for k, v in siren.state_dict().items())
        assert r["output_offset"] == 0.5
    # their split file, written on another machine: absolute paths that no longer exist
    splits = {"train": {"path": [], "label": []}, "val": {"path": [], "label": []}, "test": {"path": [], "label": []}}
    for path, (_, label, part) in originals.items():
        moved = "/elsewhere/dataset/mnist-inrs/" + "/".join(path.split("/")[-3:])
        splits["train" if part == "training" else "test"]["path"].append(moved)
        splits["train" if part == "training" else "test"]["label"].append(str(label))
    (root / "mnist_splits.json").write_text(json.dumps(splits))
    from_file = DWSNetsINRZoo(root / "mnist_splits.json")
    assert len(from_file) == 8 and all(torch.equal(from_file.state_dict(0)[k], v)
                                       for k, v in originals[from_file.records[0]["path"]][0].state_dict().items())


def test_nfn_siren_layout(tmp_path):
    originals = {}
    for idx in range(7):
        label = idx % 3
        folder = tmp_path / f"randinit_smaller_{label}s"
        folder.mkdir(exist_ok=True)
        torch.manual_seed(idx)
        siren = make_siren()
        sd = siren.state_dict()
        nfn_sd = {"net.0.linear.weight": sd["0.weight"], "net.0.linear.bias": sd["0.bias"],
                  "net.1.linear.weight": sd["2.weight"], "net.1.linear.bias": sd["2.bias"],
                  "net.2.weight": sd["4.weight"], "net.2.bias": sd["4.bias"]}
        torch.save(nfn_sd, folder / f"net{idx}.pth")
        originals[idx] = (siren, label)
    (tmp_path / "randinit_smaller_aug0_1s").mkdir()  # augmented copies live beside, not inside, the zoo
    torch.save({}, tmp_path / "randinit_smaller_aug0_1s" / "net99.pth")
    zoo = NFNSirenZoo(tmp_path, split_points=(4, 6))
    assert [r["index"] for r in zoo.records] == list(range(7))
    assert [r["split"] for r in zoo.records] == ["train"] * 4 + ["val"] * 2 + ["test"]
    coords = torch.rand(10, 2)
    for i, r in enumerate(zoo.records):
        siren, label = originals[r["index"]]
        assert r["label"] == label
        torch.testing.assert_close(zoo.module(i)(coords), siren(coords))


def test_unsafe_inr_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "randinit_smaller_1s"
    folder.mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"net.0.linear.weight": Boom()}, folder / "net0.pth")
    zoo = NFNSirenZoo(tmp_path)
    with pytest.raises(converters.UnsafeCheckpointError, match="net0.pth"):
        zoo.state_dict(0)


def test_wrong_shapes_are_named(tmp_path):
    folder = tmp_path / "randinit_smaller_1s"
    folder.mkdir()
    sd = {k: v for k, v in make_siren(widths=(2, 16, 16, 1)).state_dict().items()}
    torch.save(sd, folder / "net0.pth")
    with pytest.raises(PublishedFormatError, match="net0.pth.*shape \\(16, 2\\), expected \\(32, 2\\)"):
        NFNSirenZoo(tmp_path).state_dict(0)
