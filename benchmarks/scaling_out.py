"""Two processes against one on this machine: zoo making (sharded workers) and training (torchrun + DDP).

    python -m benchmarks.scaling_out [--inrs 2048] [--steps 100] [--repeat 3]

Zoo: the digits SIREN recipe with every INR fitted for its 500 steps (``--target-psnr
none``: no early stop, so that shards cost alike), ``--inrs`` INRs in shards of 64, made by one
``python -m graphnfn.zoo siren`` worker, then by two concurrent workers
(``--num-shards 2``) into a fresh directory; every worker ``--threads 1``; the
wall-clock of the command(s), start-up included. Training: ``inr_classification`` with
pna on that zoo under ``torchrun --nproc_per_node 1`` and ``2``, ``threads=1``, the same
effective batch; the fit's training seconds (steps only, no evaluation; rank 0's) and
the command's wall-clock. 1 and 2 alternate ``--repeat`` times, so that other load on a
shared machine falls on both alike; the best of each is kept. Writes
benchmarks/results/scaling_out.json. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import write_results

ROOT = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def make_zoo(out: Path, inrs: int, workers: int) -> float:
    """Seconds for ``workers`` concurrent workers to make the zoo at ``out``."""
    args = [sys.executable, "-m", "graphnfn.zoo", "siren", "--dataset", "digits", "--out", str(out), "--limit",
            str(inrs), "--shard-size", "64", "--target-psnr", "none", "--device", "cpu", "--threads", "1",
            "--no-progress"]
    start = time.perf_counter()
    procs = [subprocess.Popen(args + (["--num-shards", str(workers), "--shard-index", str(i)] if workers > 1 else []),
                              cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL) for i in range(workers)]
    if any(p.wait() for p in procs):
        raise RuntimeError("a zoo worker failed")
    return time.perf_counter() - start


def train(zoo: Path, runs: Path, nproc: int, steps: int, batch_size: int) -> dict:
    """The training seconds, networks/s and wall-clock of one run under torchrun."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "experiments.inr_classification", "-F", str(runs), "with", f"zoo={zoo}", "model=pna", f"steps={steps}",
            f"eval_every={steps}", f"batch_size={batch_size}", "threads=1", "device=cpu"]
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    latest = max((p for p in runs.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    summary = json.loads((latest / "info.json").read_text())["summary"]
    return {"train_seconds": summary["train_seconds"], "networks_per_s": summary["examples_per_second"],
            "wall_seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inrs", type=int, default=2048)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling_out.json"))
    args = p.parse_args()
    zoo_s: dict[int, list[float]] = {1: [], 2: []}
    fits: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeat):
            for workers in (1, 2):
                zoo_s[workers].append(make_zoo(tmp / f"zoo-{workers}-{r}", args.inrs, workers))
        zoo = tmp / "zoo-1-0"
        for _ in range(args.repeat):
            for nproc in (1, 2):
                fits[nproc].append(train(zoo, tmp / f"runs{nproc}", nproc, args.steps, args.batch_size))
    zoo_best = {w: min(s) for w, s in zoo_s.items()}
    fit_best = {n: min(f, key=lambda f: f["train_seconds"]) for n, f in fits.items()}
    rows = {
        "zoo": {"inrs": args.inrs, "seconds": zoo_s, "best": zoo_best, "speedup": zoo_best[1] / zoo_best[2]},
        "training": {"steps": args.steps, "effective_batch": args.batch_size, "runs": fits, "best": fit_best,
                     "speedup_train_seconds": fit_best[1]["train_seconds"] / fit_best[2]["train_seconds"],
                     "speedup_wall": min(f["wall_seconds"] for f in fits[1]) / min(f["wall_seconds"] for f in fits[2])},
    }
    print(f"zoo of {args.inrs} INRs: 1 worker {zoo_best[1]:.1f} s, 2 workers {zoo_best[2]:.1f} s, "
          f"speed-up {rows['zoo']['speedup']:.2f}x")
    t = rows["training"]
    print(f"training {args.steps} steps, effective batch {args.batch_size}: 1 process {fit_best[1]['train_seconds']:.1f} s "
          f"({fit_best[1]['networks_per_s']:.0f} networks/s), 2 processes {fit_best[2]['train_seconds']:.1f} s "
          f"({fit_best[2]['networks_per_s']:.0f} networks/s): speed-up {t['speedup_train_seconds']:.2f}x "
          f"(wall-clock with start-up {t['speedup_wall']:.2f}x)")
    write_results(args.out, "cpu", {"threads": 1, "processes": "1 and 2", "cpus": os.cpu_count()}, **rows)


if __name__ == "__main__":
    main()
