"""Training under torchrun: 2 gloo processes on the CPU train as 1 process with the same effective batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import distributed
from graphnfn.zoo import SirenRecipe, make_siren_zoo
from graphnfn.zoo.siren import SirenFit

ROOT = Path(__file__).resolve().parents[1]
# effective batch 16 (8 per process with two); limit=48: a train split the batch and the two
# processes divide evenly (else a DistributedSampler pads it with repeats), 3 batches a pass
TINY = {"quick": True, "limit": 48, "steps": 8, "eval_every": 4, "batch_size": 16, "d_hidden": 16, "n_layers": 1,
        "heads": 2, "fourier": 4, "device": "cpu", "threads": 1}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "siren"
    recipe = SirenRecipe("shared-permuted", 8, 1, SirenFit(steps=30, lr=1e-3))
    return make_siren_zoo(path, dataset="digits", recipe=recipe, limit=80, shard_size=40, device="cpu",
                          progress=False)


def torchrun(nproc: int, runs: Path, module: str, *updates: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module,
            "-F", str(runs), "with", *updates]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.name != "_sources")


def test_two_processes_train_as_one_with_the_same_effective_batch(tmp_path, zoo, monkeypatch):
    """DDP averages the two halves' gradients: the step of one process with the whole batch. The
    same DistributedSampler order is drawn for 1 and 2 processes, so the runs differ only by the
    order of float sums: every logged metric agrees to 1e-5 (float32, 8 AdamW steps; measured: 1e-7)."""
    torchrun(2, tmp_path / "runs2", "experiments.inr_classification", *TINY_ARGS, f"zoo={zoo}", "model=pna")
    # the reference: what `torchrun --nproc_per_node 1` runs, in this process (saves a start-up)
    from sacred.observers import FileStorageObserver

    from experiments.inr_classification import ex

    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ex, "observers", [FileStorageObserver(str(tmp_path / "runs1"))])
    threads = torch.get_num_threads()
    try:
        ex.run(config_updates={**TINY, "zoo": str(zoo), "model": "pna"})
    finally:
        torch.set_num_threads(threads)  # the run sets threads=1 for this whole process
    results = {}
    for nproc in (1, 2):
        (run,) = run_dirs(tmp_path / f"runs{nproc}")  # rank 0 alone writes a run directory
        config = json.loads((run / "config.json").read_text())
        assert config["world_size"] == nproc and config["batch_size"] == 16
        assert json.loads((run / "run.json").read_text())["status"] == "COMPLETED"
        metrics = json.loads((run / "metrics.json").read_text())
        results[nproc] = {k: v["values"] for k, v in metrics.items()}
        assert list(run.glob("best-pna-seed0.pt"))
    one, two = results[1], results[2]
    assert one.keys() == two.keys() and {"train_loss", "val_loss", "test_loss"} <= one.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-5, rel=0), key
    # and the model did train: the train loss of the second evaluation differs from the first
    assert one["train_loss"][0] != one["train_loss"][1]


def test_compare_under_torchrun_writes_one_table(tmp_path, zoo):
    runs = tmp_path / "runs"
    torchrun(2, runs, "experiments.compare", *TINY_ARGS, f"zoo={zoo}", "task=inr_classification",
             'models=["flat-mlp","align-linear"]', "seeds=[0]")
    (run,) = run_dirs(runs)
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    table = (run / "results.md").read_text()
    assert "| flat-mlp |" in table and "| align-linear |" in table


def test_world_size_and_batch_are_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="set by torchrun"):
        distributed.check({"world_size": 1, "batch_size": 16})
    with pytest.raises(ValueError, match="multiple of the world size"):
        distributed.check({"world_size": 2, "batch_size": 15})
    distributed.check({"world_size": 2, "batch_size": 16})
