"""A fit cut off mid-run continues from its checkpoint and ends as an uninterrupted one would."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from graphnfn.training import classification_task, fit, lr_factor

STEPS, EVAL_EVERY = 23, 3  # 5 batches a pass: evaluations (and checkpoints) fall mid-pass


class _Noisy(Dataset):
    """Points with fresh noise at every draw from the global torch RNG (like a weight augmentation)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(self.x[i].shape), self.y[i]


def _data(kind: str):
    """Fresh (train, val, test) loaders, as a new process would build them."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=gen), torch.randint(0, 3, (60,), generator=gen)
    val, test = [(x[40:50], y[40:50])], [(x[50:], y[50:])]
    if kind == "list":  # the experiments' materialised batches: one order every pass
        return [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)], val, test
    seeded = torch.Generator().manual_seed(1) if kind.startswith("seeded loader") else None
    workers = 2 if kind.endswith("workers") else 0  # their RNGs are seeded off the loader's generator every pass
    return DataLoader(_Noisy(x[:40], y[:40]), batch_size=8, shuffle=True, generator=seeded,
                      num_workers=workers), val, test


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))  # dropout draws too


def _fit(kind: str, seed: int = 0, **kwargs):
    train, val, test = _data(kind)
    return fit(_model(seed), train, val, test, classification_task(), steps=STEPS, eval_every=EVAL_EVERY,
               device="cpu", progress=False, **kwargs)


class _CutOff(Exception):
    pass


@pytest.mark.parametrize("kind", ["list", "seeded loader", "unseeded loader", "seeded loader, 2 workers"])
@pytest.mark.parametrize("cut_at", [12, 18])  # checkpoints of step 9 (mid-pass) and 15 (a pass's end)
def test_a_fit_cut_off_resumes_to_the_uninterrupted_result(tmp_path, kind, cut_at):
    logged = []
    whole = _fit(kind, log=lambda *entry: logged.append(entry))

    path = tmp_path / "fit.pt"

    def cut_off(name, value, step):
        if step == cut_at:
            raise _CutOff
    with pytest.raises(_CutOff):
        _fit(kind, checkpoint=path, log=cut_off)
    assert path.is_file() and not path.with_name("fit.pt.tmp").exists()
    assert torch.load(path, weights_only=True)["loop"]["step"] == cut_at - EVAL_EVERY

    torch.manual_seed(123)  # another process: its own RNG state, a model initialised otherwise
    relogged = []
    resumed = _fit(kind, seed=1, checkpoint=path, log=lambda *entry: relogged.append(entry))
    assert resumed.history == whole.history and resumed.best_step == whole.best_step
    assert resumed.val == whole.val and resumed.test == whole.test
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in whole.state_dict.items())
    assert relogged == logged  # the earlier evaluations are replayed to the new run's log
    assert resumed.examples_per_second > 0


def test_an_empty_train_loader_is_refused():
    with pytest.raises(ValueError, match="yields no batches"):
        fit(_model(0), [], *_data("list")[1:], classification_task(), steps=2, device="cpu", progress=False)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "fit.pt"
    _fit("list", checkpoint=path)
    with pytest.raises(ValueError, match=r"other \['lr', 'steps'\]"):
        train, val, test = _data("list")
        fit(_model(0), train, val, test, classification_task(), steps=STEPS + 1, eval_every=EVAL_EVERY, lr=0.1,
            device="cpu", progress=False, checkpoint=path)


def test_warmup_rises_then_follows_the_cosine_and_is_part_of_the_checkpoint(tmp_path):
    """lr_factor: (step + 1) / warmup times the cosine, the plain cosine without warmup; a warmed-up
    fit resumes only with the same warmup, and differs from one without."""
    steps = 10
    cosine = [0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps + 1)]
    assert [lr_factor(s, steps) for s in range(steps + 1)] == cosine
    assert [lr_factor(s, steps, warmup=4) for s in range(steps + 1)] == \
        [min(1, (s + 1) / 4) * c for s, c in enumerate(cosine)]
    with pytest.raises(ValueError, match="warmup must be in"):
        _fit("list", warmup=STEPS)
    path = tmp_path / "fit.pt"
    warm = _fit("list", warmup=5, checkpoint=path)
    assert warm.history != _fit("list").history
    with pytest.raises(ValueError, match=r"other \['warmup'\]"):
        _fit("list", warmup=3, checkpoint=path)


ROOT = Path(__file__).resolve().parents[1]
# flat-mlp-aug: its train loader redraws permutations every pass (the loader and RNG states must be resumed too)
COMPARE = {"quick": True, "steps": 120, "eval_every": 10, "batch_size": 16, "zoo_limit": 60, "zoo_steps": 30,
           "fourier": 4, "d_hidden": 16, "threads": 1, "device": "cpu", "models": ["flat-mlp-aug"], "seeds": [0]}
PAIR = "flat-mlp-aug-seed0-config0"


def _start_compare(tmp_path, **updates) -> subprocess.Popen:
    config = {**COMPARE, "zoo_root": str(tmp_path / "zoos"), **updates}
    with open(tmp_path / "compare.log", "a") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "experiments.compare", "-F", str(tmp_path / "runs"), "with",
                                 *(f"{k}={v!r}" for k, v in config.items())], cwd=ROOT, stdout=log, stderr=log)


def _finish(process: subprocess.Popen, tmp_path) -> None:
    assert process.wait(timeout=300) == 0, (tmp_path / "compare.log").read_text()[-3000:]


def test_a_compare_run_killed_mid_pair_resumes_to_the_uninterrupted_result(tmp_path):
    runs = tmp_path / "runs"
    _finish(_start_compare(tmp_path), tmp_path)  # run 1: uninterrupted (and it makes the zoo)

    killed = _start_compare(tmp_path)  # run 2: killed once it has written a checkpoint
    checkpoint = runs / "2" / f"ckpt-{PAIR}.pt"
    while not checkpoint.is_file():
        assert killed.poll() is None, (tmp_path / "compare.log").read_text()[-3000:]
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (runs / "2" / f"pair-{PAIR}.json").exists()  # cut off mid-pair

    _finish(_start_compare(tmp_path, resume=str(runs / "2")), tmp_path)  # run 3
    assert f"continuing from {checkpoint}" in (runs / "3" / "cout.txt").read_text()  # not trained from the start
    whole, resumed = (json.loads((runs / run / f"pair-{PAIR}.json").read_text()) for run in ("1", "3"))
    assert resumed["history"] == whole["history"] and len(whole["history"]) == 12
    assert (resumed["best_step"], resumed["test"], resumed["val"]) == (whole["best_step"], whole["test"], whole["val"])
    weights = [torch.load(runs / run / "best-flat-mlp-aug-seed0.pt", weights_only=True)["state_dict"]
               for run in ("1", "3")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not (runs / "3" / f"ckpt-{PAIR}.pt").exists()  # a finished pair leaves no checkpoint
    metrics = json.loads((runs / "3" / "metrics.json").read_text())
    assert len(metrics["flat-mlp-aug.seed0.val_accuracy"]["values"]) == 12  # the whole curve, replayed


def test_a_task_experiment_cut_off_resumes_from_its_run_directory(tmp_path, monkeypatch):
    import graphnfn.training
    from experiments.inr_classification import ex
    from sacred.observers import FileStorageObserver

    ex.observers[:] = [FileStorageObserver(str(tmp_path / "runs"))]
    config = {**{k: v for k, v in COMPARE.items() if k not in ("models", "seeds")}, "steps": 30,
              "zoo_root": str(tmp_path / "zoos"), "model": "stat"}
    whole = ex.run(config_updates=config).info["summary"]

    evaluate, calls, cut_at = graphnfn.training.evaluate, [], [3]

    def counted(*args, **kwargs):  # the third call is step 30's evaluation: the checkpoint is of step 20
        calls.append(1)
        if len(calls) in cut_at:
            raise _CutOff
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(graphnfn.training, "evaluate", counted)
    with pytest.raises(_CutOff):
        ex.run(config_updates=config)
    cut_off = tmp_path / "runs" / "2"
    assert (cut_off / "ckpt-stat-seed0.pt").is_file()

    with pytest.raises(ValueError, match=r"other values of \['lr'\]"):
        ex.run(config_updates={**config, "resume": str(cut_off), "lr": 0.5})
    calls.clear(), cut_at.clear()
    resumed = ex.run(config_updates={**config, "resume": str(cut_off)})
    assert len(calls) == 3  # step 30's evaluation, then the best weights' val and test: steps 1-20 not retrained
    summary = resumed.info["summary"]
    assert summary["history"] == whole["history"] and summary["test"] == whole["test"]
    assert not (tmp_path / "runs" / str(resumed._id) / "ckpt-stat-seed0.pt").exists()


def test_a_run_that_predates_a_key_resumes_only_at_its_default(tmp_path):
    """A run directory written before a config key existed ran at that key's default: resuming
    it with another value must be refused, not merged."""
    from sacred.config.config_scope import ConfigScope
    from experiments.config import shared_config
    from experiments.resume import check_same_config

    cfg = ConfigScope(shared_config)()
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "dropout"}))
    check_same_config({**cfg, "resume": str(tmp_path)})
    with pytest.raises(ValueError, match=r"other values of \['dropout'\]"):
        check_same_config({**cfg, "dropout": 0.2, "resume": str(tmp_path)})
