"""The comparison's report: every (model, seed) pair's own peak memory, and plots a person can read."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from experiments import compare
from graphnfn import memory
from graphnfn.memory import PeakMemory

MiB = 2**20


def _touch(mib: int) -> float:
    """Hold ``mib`` MiB of written memory for a moment."""
    return torch.ones(mib * MiB // 4).sum().item()


def test_peak_memory_is_that_of_the_work_alone():
    with PeakMemory("cpu") as big:
        _touch(160)
    with PeakMemory("cpu") as small:  # after the big one: its peak must not carry over
        _touch(1)
    assert big.method == small.method == "rss"  # Linux: the resident-set peak can be reset
    assert big.bytes > 120 * MiB and small.bytes < 40 * MiB
    assert small.peak_bytes < big.peak_bytes - 100 * MiB


def test_without_a_resettable_peak_the_figure_says_it_is_the_process_peak(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakMemory("cpu") as peak:
        _touch(1)
    assert peak.method == "process" and peak.bytes is None and peak.peak_bytes > 0
    row = {"model": "stat", "family": "paramshare", "encoding": "raw", "metric": "accuracy", "mean": 0.5, "std": 0.0,
           "extra": {}, "parameters": 1, "steps": 1, "train_seconds": 1.0, "examples_per_second": 1.0,
           "peak_memory_mib": peak.peak_bytes / MiB, "own_memory_mib": None, "memory_method": peak.method,
           "best": True, "close": True}
    table = compare.markdown_table([row], "t")
    assert table.splitlines()[4].endswith("| - |") and "lifetime peak" in table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_is_that_of_the_work_alone():
    with PeakMemory("cuda") as big:
        torch.ones(64 * MiB // 4, device="cuda").sum().item()
    with PeakMemory("cuda") as small:
        torch.ones(1024, device="cuda").sum().item()
    assert big.method == "cuda" and big.bytes >= 64 * MiB and small.bytes < 4 * MiB


def _fake_result(cfg: dict) -> dict:
    """What experiments.tasks.run returns, for a model that holds more memory the larger its name says."""
    _touch(160 if cfg["model"] == "flat-mlp" else 1)
    history = [{"step": s, "train_loss": 1.0 / s, "val_accuracy": 0.1 * s} for s in (2, 4, 6)]
    return {"model": cfg["model"], "family": "paramshare", "encoding": "fourier4", "seed": cfg["seed"],
            "task": "classification", "metric": "accuracy", "higher_is_better": True,
            "test": {"accuracy": 0.5 + 0.1 * cfg["seed"], "loss": 1.0}, "val": {"accuracy": 0.5, "loss": 1.0},
            "steps": 6, "best_step": 6, "parameters": 5_000 if cfg["model"] == "stat" else 12_000_000,
            "train_seconds": 3.0 + cfg["seed"], "examples_per_second": 100.0, "wall_seconds": 4.0,
            "peak_memory_mib": 999.0, "device": "cpu", "history": history, "options": {},
            "zoo": {"path": "zoo", "kind": "siren", "init": "independent"}}


class _Run:
    _id = 1
    observers = []  # no run directory: nothing checkpointed

    def add_artifact(self, filename, name=None):
        pass

    def log_scalar(self, *args):
        pass


def test_each_model_row_has_its_own_peak_memory(monkeypatch):
    monkeypatch.setattr(compare, "run", lambda cfg, task, _run, checkpoint=None: _fake_result(cfg))
    cfg = {"task": "inr_classification", "seeds": [0, 1], "tune": 0, "resume": None, "device": "cpu"}
    results = [r for model in ("flat-mlp", "stat") for r in compare.run_model(cfg, model, _Run(), {})]
    rows = compare.summarise(results)
    own = {r["model"]: r["own_memory_mib"] for r in rows}
    assert own["flat-mlp"] > 120 and own["stat"] < 40  # not the process's peak, the same for every row
    assert {r["memory_method"] for r in rows} == {"rss"}
    table = compare.markdown_table(rows, "t")
    assert "| peak MiB | own MiB |" in table and "VmHWM" in table
    assert f"| {own['stat']:.0f} |" in table.splitlines()[5]


def test_plots_are_written(tmp_path):
    results = [_fake_result({"model": m, "seed": s}) | {"own_memory_mib": 10.0 * (i + 1), "memory_method": "rss"}
               for i, (m, s) in enumerate(itertools.product(("flat-mlp", "stat"), (0, 1)))]
    paths = compare.plot(results, compare.summarise(results), tmp_path, "inr_classification on digits")
    assert sorted(p.name for p in paths) == ["accuracy_vs_parameters.png", "accuracy_vs_train_seconds.png",
                                             "learning_curves.png", "peak_memory.png"]
    for p in paths:
        assert plt.imread(p).shape[0] > 300  # a real image, not an empty file


@pytest.mark.parametrize("values", [[4_970, 11_857_025], [3.1, 4.5], [0.02, 250.0], [12.0, 13.0]])
def test_log_axis_labels_do_not_overlap(values):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(values, [0.5] * len(values), "o")
    compare._log_x(ax, values)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [(t, x) for t, x in [*zip(ax.get_xticklabels(), ax.get_xticks()),
                                 *zip(ax.get_xticklabels(minor=True), ax.get_xticks(minor=True))]
             if t.get_text() and lo <= x <= hi]
    assert any(x in ax.get_xticks() for _, x in shown)  # a labelled major tick, not only minor ones
    boxes = [t.get_window_extent() for t, _ in shown]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), [t.get_text() for t, _ in shown]
    plt.close(fig)
