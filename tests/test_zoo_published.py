"""Readers of the published zoo layouts, and experiments on them, on tiny files written in
those layouts (tests/published_layouts.py: what each file holds, after the authors' code)."""
import random

import numpy as np
import pytest
import torch
from sacred.observers import FileStorageObserver

import converters
from graphnfn.zoo import DWSNetsINRZoo, NFNSirenZoo, SmallCNNZoo, make_siren, open_zoo
from graphnfn.zoo.published import PublishedFormatError
from published_layouts import (
    STEPS, write_dwsnets_inrs, write_dwsnets_splits, write_nfn_order, write_nfn_sirens, write_small_cnn_zoo,
)


def test_small_cnn_zoo_reader(tmp_path):
    models = write_small_cnn_zoo(tmp_path, nan_row=5)  # row 5: network 1 at step 86
    zoo = SmallCNNZoo(tmp_path)  # final epoch, diverged rows dropped
    assert [r["epoch"] for r in zoo.records] == [86] * 3
    assert zoo.rows == [2, 8, 11]
    r = zoo.records[1]
    assert r["label"] == pytest.approx(0.1 + 0.8 * 2 / 4 + 0.086) and r["hparams"]["learning_rate"] == pytest.approx(0.03)
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


def test_small_cnn_zoo_split_and_row_order_are_nfns(tmp_path):
    write_small_cnn_zoo(tmp_path, n_nets=10)
    order = write_nfn_order(tmp_path / "mnist_split.csv", 30)
    zoo = SmallCNNZoo(tmp_path, order=tmp_path / "mnist_split.csv")
    finals = [i for i in order if i % 3 == 2]  # rows in NFN's order, then step == 86
    assert zoo.rows == finals
    # NFN's ZooDataset._split_indices_iid: last half test; the first half shuffled by random.Random(0), 80/20
    first_half = list(range(5))
    random.Random(0).shuffle(first_half)
    want = {**{i: "train" for i in first_half[:4]}, **{i: "val" for i in first_half[4:]}, **{i: "test" for i in range(5, 10)}}
    assert [r["split"] for r in zoo.records] == [want[i] for i in range(10)]
    (tmp_path / "bad_split.csv").write_text("0\n1\n")
    with pytest.raises(PublishedFormatError, match="bad_split.csv: not an order of the 30 rows"):
        SmallCNNZoo(tmp_path, order=tmp_path / "bad_split.csv")


def test_dwsnets_directory_and_split_file(tmp_path):
    root = tmp_path / "mnist-inrs"
    originals = write_dwsnets_inrs(root, n_train=6, n_test=2)
    zoo = DWSNetsINRZoo(root, val_size=2)
    assert len(zoo) == 8 and sum(r["split"] == "val" for r in zoo.records) == 2
    assert sum(r["split"] == "test" for r in zoo.records) == 2
    for i, r in enumerate(zoo.records):
        siren, label, part = originals[r["path"]]
        assert r["label"] == label and (r["split"] == "test") == (part == "testing")
        assert all(torch.equal(zoo.state_dict(i)[k], v) for k, v in siren.state_dict().items())
        assert r["output_offset"] == 0.5
    # their split file, written on another machine: absolute paths that no longer exist
    write_dwsnets_splits(tmp_path / "mnist_splits.json", originals, val=2, moved_to="/elsewhere/dataset/mnist-inrs")
    from_file = DWSNetsINRZoo(tmp_path / "mnist_splits.json")
    assert [r["split"] for r in from_file.records] == ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    for i, r in enumerate(from_file.records):
        siren, label, _ = originals[str(root / "/".join(r["path"].split("/")[-3:]))]
        assert r["label"] == label
        assert all(torch.equal(from_file.state_dict(i)[k], v) for k, v in siren.state_dict().items())


def test_nfn_siren_layout(tmp_path):
    originals = write_nfn_sirens(tmp_path, {idx: idx % 3 for idx in range(7)})
    zoo = NFNSirenZoo(tmp_path, split_points=(4, 6))  # the augmented copies beside the zoo are not read
    assert [r["index"] for r in zoo.records] == list(range(7))
    assert [r["split"] for r in zoo.records] == ["train"] * 4 + ["val"] * 2 + ["test"]
    coords = torch.rand(10, 2)
    for i, r in enumerate(zoo.records):
        assert r["label"] == r["index"] % 3
        torch.testing.assert_close(zoo.module(i)(coords), originals[r["index"]](coords))


def test_open_zoo_recognises_each_layout(tmp_path):
    write_small_cnn_zoo(tmp_path / "cnn")
    write_nfn_sirens(tmp_path / "nfn", {0: 1, 1: 2})
    originals = write_dwsnets_inrs(tmp_path / "dws", n_train=2, n_test=1)
    write_dwsnets_splits(tmp_path / "dws_splits.json", originals, val=1)
    assert type(open_zoo(tmp_path / "cnn", "cnn")) is SmallCNNZoo
    nfn = open_zoo(tmp_path / "nfn", "siren")
    assert type(nfn) is NFNSirenZoo and len(nfn) == 2  # prefix randinit_smaller, not its _aug0 copies
    assert type(open_zoo(tmp_path / "dws")) is DWSNetsINRZoo
    assert [r["split"] for r in open_zoo(tmp_path / "dws_splits.json").records] == ["train", "val", "test"]
    with pytest.raises(ValueError, match="is a siren zoo; this task needs a cnn zoo"):
        open_zoo(tmp_path / "nfn", "cnn")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishedFormatError, match="no zoo layout recognised"):
        open_zoo(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        open_zoo(tmp_path / "missing")


TINY = {"quick": True, "steps": 2, "eval_every": 1, "batch_size": 4, "d_hidden": 8, "n_layers": 1, "heads": 2,
        "fourier": 4, "device": "cpu"}


def _small_cnn_zoo(root):
    write_small_cnn_zoo(root, n_nets=10)
    return root


def _nfn_sirens(root):
    # NFN's split points (45000, 50000) on a tiny zoo: sparse indices on each side of them
    write_nfn_sirens(root, {i: i % 3 for i in [*range(6), 45000, 45001, 50000, 50001]})
    return root


def _dwsnets_split_file(root):
    write_dwsnets_splits(root / "mnist_splits.json", write_dwsnets_inrs(root / "mnist-inrs", 6, 2), val=2)
    return root / "mnist_splits.json"


@pytest.mark.parametrize("module, model, make", [
    ("cnn_generalization", "stat", _small_cnn_zoo),
    ("inr_classification", "pna", _nfn_sirens),
    ("inr_classification", "nfn-hnp", _dwsnets_split_file),
])
def test_experiments_run_on_published_layouts(tmp_path, module, model, make):
    ex = __import__(f"experiments.{module}", fromlist=["ex"]).ex
    ex.observers[:] = [FileStorageObserver(str(tmp_path / "runs"))]
    zoo = make(tmp_path / "zoo")
    run = ex.run(config_updates={**TINY, "zoo": str(zoo), "zoo_root": str(tmp_path / "made"), "model": model})
    assert run.status == "COMPLETED" and run.info["summary"]["zoo"]["path"] == str(zoo)
    assert not (tmp_path / "made").exists()  # the published zoo was used, no zoo was made


def test_an_experiment_refuses_a_zoo_of_the_wrong_kind(tmp_path):
    from experiments.cnn_generalization import ex

    ex.observers[:] = [FileStorageObserver(str(tmp_path / "runs"))]
    with pytest.raises(ValueError, match="is a siren zoo; this task needs a cnn zoo"):
        ex.run(config_updates={**TINY, "zoo": str(_nfn_sirens(tmp_path / "zoo")), "model": "stat"})


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
