"""The prepared GPU run: one command that checks the graph models on CUDA and measures what
the project's CPU could not; under 8 minutes on one H100.

    make gpu-check                     # python -m benchmarks.gpu
    python -m benchmarks.gpu --quick   # a dry run on the CPU at tiny sizes (tests/test_gpu_script.py)

Parts (each reported on its own; a failing part does not stop the others):

  devices          pytest tests/test_devices.py: CUDA outputs equal the CPU's without host
                   syncs, bf16 autocast trains (the meta-device tests too)
  sparse_vs_dense  benchmarks.graph_models at zoo size (SIREN, CNN zoo, batch 64) and at 2k+
                   neurons (MLPs 64-250x8-10 and 64-1000x2-10): one layer, d = 64; goal
                   >= 5x less memory and >= 3x faster than the dense layer at 2k+ neurons
  step_ratio       benchmarks.step_ratio: graph models against nfn-hnp per training step
  siren_fit        benchmarks.zoo: a Fashion-MNIST SIREN zoo of --inrs INRs made end to end
                   (graphnfn.zoo.make_siren_zoo: 4,096 INRs fitted at once, its default
                   recipe, shards written): INRs/s, the time 70,000 would take at that rate
                   (extrapolated unless --inrs 70000) and the median PSNR; goal on an H100:
                   70k INRs in < 60 s at median PSNR >= 35 dB
  classification  python -m experiments.inr_classification on a small zoo (transformer)

Data: Fashion-MNIST's IDX files from --data-dir (default: graphnfn.datasets' place); where
they are missing, scikit-learn's digits with their own recipe (said in the results; not
comparable with the Fashion-MNIST goal).
Dependencies: torch, torch_geometric, numpy, plus per part what ``REQUIRES`` lists (tqdm
and safetensors: graphnfn.zoo; scipy: graphnfn.paramshare and graphnfn.training; sacred:
the experiments; pytest and hypothesis: the tests). A part whose modules are missing is
skipped with their names. The lent machines' image lacks only sacred: ``make gpu-deps``
installs it and what it needs into .gpu-deps/ (15 MB; carry ".gpu-deps"), which this script
puts on its own and its subprocesses' path where a module is missing without it.
Writes benchmarks/results/gpu-<date>-<time>.json and prints a summary. Not part of the tests.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.measure import write_results

ROOT = Path(__file__).resolve().parents[1]
DEPS = ROOT / ".gpu-deps"

ZOO_CASES = ["SIREN (67 nodes)", "CNN zoo (59 nodes)"]
LARGE_CASES = ["MLP 64-250x8-10", "MLP 64-1000x2-10"]
INRS_GOAL, SECONDS_GOAL, PSNR_GOAL = 70_000, 60.0, 35.0
REQUIRES = {
    "devices": ["pytest", "hypothesis", "torch_geometric"],
    "sparse_vs_dense": ["torch_geometric"],
    "step_ratio": ["torch_geometric", "scipy", "safetensors", "tqdm"],
    "siren_fit": ["safetensors", "tqdm"],
    "classification": ["sacred", "scipy", "safetensors", "tqdm"],
}
#: what --quick shrinks (CPU, seconds) and the full run's sizes
SIZES = {
    False: {"pytest": [], "cases": ZOO_CASES + LARGE_CASES, "repeat": 3, "fresh": True, "layer_batch": None,
            "batch": 64, "inrs": None, "fit_batch": 4096, "zoo_limit": 2000, "zoo_steps": None, "steps": 300},
    True: {"pytest": ["-k", "never_reads and invariant-graph-pna-False"], "cases": ZOO_CASES[:1], "repeat": 1,
           "fresh": False, "layer_batch": 2, "batch": 2, "inrs": 16, "fit_batch": 8, "zoo_limit": 40,
           "zoo_steps": 3, "steps": 2},
}


def missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


#: .gpu-deps only where something is missing without it, so it never shadows what is installed
USE_DEPS = DEPS.is_dir() and bool(missing(sorted({m for ms in REQUIRES.values() for m in ms})))
if USE_DEPS:
    sys.path.insert(0, str(DEPS))


def child_env(args) -> dict[str, str]:
    """The subprocesses' environment: .gpu-deps on their path too; in a dry run one thread
    (on a small shared CPU, OpenMP threads waiting on each other make a step many times slower)."""
    env = dict(os.environ)
    if USE_DEPS:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DEPS), env.get("PYTHONPATH")]))
    if args.quick:
        env["OMP_NUM_THREADS"] = "1"
    return env


def devices(args, size: dict) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py", *size["pytest"]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.part_timeout, env=child_env(args))
    return {"command": " ".join(cmd[1:]), "returncode": out.returncode,
            "summary": (out.stdout.strip().splitlines() or [""])[-1], "tail": out.stdout[-3000:] + out.stderr[-2000:]}


def sparse_vs_dense(args, size: dict) -> dict:
    from benchmarks import graph_models

    rows, _ = graph_models.run(size["cases"], args.device, repeat=size["repeat"], scaling=False, fresh=size["fresh"],
                               batch_size=size["layer_batch"])
    graph_models.print_table(rows, args.device, 64, 4)
    gains = {}
    for case in size["cases"]:
        by = {r["layer"]: r for r in rows if r["case"] == case and "ms" in r}
        if "dense-attention" in by:
            dense = by["dense-attention"]
            gains[case] = {kind: {"faster": dense["ms"] / by[kind]["ms"],
                                  "less_memory": dense["peak_mib"] / max(by[kind]["peak_mib"], 1e-9)}
                           for kind in ("sparse-attention", "sparse-recompute") if kind in by}
    return {"rows": rows, "dense_over_sparse": gains}


def step_ratio(args, size: dict) -> dict:
    from benchmarks import step_ratio as sr

    return {"rows": sr.run(args.device, size["batch"], size["repeat"])}


def dataset(args) -> tuple[str, str]:
    """(data set, note): Fashion-MNIST where its IDX files are, else the embedded digits."""
    from graphnfn.datasets import load_dataset

    try:
        load_dataset("fashion-mnist", args.data_dir)
        return "fashion-mnist", "fashion-mnist"
    except (OSError, ValueError) as err:
        return "digits", f"digits: no Fashion-MNIST here ({err}); not comparable with the Fashion-MNIST goal"


def siren_fit(args, size: dict) -> dict:
    from benchmarks import zoo

    name, note = dataset(args)
    row = zoo.run(name, size["inrs"] or args.inrs, args.device, size["fit_batch"], args.data_dir)
    extrapolated = INRS_GOAL / row["inrs_per_s"]
    return {**row, "data": note, "extrapolated_seconds_for_70k": extrapolated,
            "goal_met": name == "fashion-mnist" and extrapolated < SECONDS_GOAL and row["median_psnr"] >= PSNR_GOAL}


def classification(args, size: dict) -> dict:
    name, note = dataset(args)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = [f"dataset={name}", "model=transformer", f"device={args.device}", f"zoo_root={tmp}/zoos",
               f"zoo_limit={size['zoo_limit']}", f"steps={size['steps']}"]
        cfg += [f"zoo_steps={size['zoo_steps']}"] if size["zoo_steps"] else []
        cfg += [f"data_dir={args.data_dir}"] if args.data_dir and name == "fashion-mnist" else []
        cmd = [sys.executable, "-m", "experiments.inr_classification", "-F", f"{tmp}/runs", "with", *cfg]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.part_timeout,
                             env=child_env(args))
        result = {"command": " ".join(cmd[1:]).replace(tmp, "TMP"), "data": note, "returncode": out.returncode,
                  "wall_seconds": time.perf_counter() - start}
        infos = sorted(Path(tmp, "runs").glob("*/info.json"))
        if infos:
            summary = json.loads(infos[-1].read_text()).get("summary", {})
            result.update({k: summary.get(k) for k in ("test", "train_seconds", "examples_per_second", "parameters")})
        if out.returncode:
            result["tail"] = out.stdout[-2000:] + out.stderr[-3000:]
    return result


PARTS = {"devices": devices, "sparse_vs_dense": sparse_vs_dense, "step_ratio": step_ratio, "siren_fit": siren_fit,
         "classification": classification}


def run_part(name: str, args, size: dict) -> dict:
    lacking = missing(REQUIRES[name])
    if lacking:
        return {"skipped": f"missing modules {lacking}: install them, or carry .gpu-deps (make gpu-deps) "
                           "for all but scipy"}
    start = time.perf_counter()
    try:
        out = PARTS[name](args, size)
    except Exception as err:  # reported in the results; the other parts still run
        out = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    return {**out, "part_seconds": time.perf_counter() - start}


def summary(name: str, r: dict) -> str:
    if "skipped" in r or "error" in r:
        return f"{name}: {'skipped: ' + r['skipped'] if 'skipped' in r else 'FAILED: ' + r['error']}"
    if name in ("devices", "classification"):
        extra = f", test {r.get('test')}" if name == "classification" else f", {r['summary']}"
        return f"{name}: exit {r['returncode']}{extra} ({r['part_seconds']:.0f} s)"
    if name == "sparse_vs_dense":
        gains = "; ".join(f"{case} {kind}: {g['faster']:.1f}x faster, {g['less_memory']:.1f}x less memory"
                          for case, by in r["dense_over_sparse"].items() for kind, g in by.items())
        return f"{name}: dense over sparse attention: {gains}"
    if name == "step_ratio":
        return f"{name}: " + "; ".join(f"{x['batch']} {x['model']} {x['ratio']:.2f}x" for x in r["rows"])
    return (f"{name}: {r['inrs']} INRs ({r['data']}) in {r['seconds']:.1f} s = {r['inrs_per_s']:,.0f} INRs/s, "
            f"70k in {r['extrapolated_seconds_for_70k']:.0f} s (extrapolated), median PSNR {r['median_psnr']:.1f} dB, "
            f"goal met: {r['goal_met']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU: a dry run of every part")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--inrs", type=int, default=16384,
                        help="SIREN zoo: INRs made to measure the rate (70000: the goal itself)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: graphnfn.datasets')")
    parser.add_argument("--part-timeout", type=float, default=300, help="seconds for a subprocess part")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/gpu-<date>-<time>.json")
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.quick else "cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available here: use --quick (CPU dry run) or --device cpu")
    size = SIZES[args.quick]
    if args.quick:
        torch.set_num_threads(1)
    results = {}
    for name in args.parts:
        print(f"== {name}", flush=True)
        results[name] = run_part(name, args, size)
        print(summary(name, results[name]), flush=True)
    out = args.out or f"benchmarks/results/gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_results(out, args.device, {"quick": args.quick, "sizes": size}, parts=results)
    print("\n".join(["", "summary:"] + [summary(name, r) for name, r in results.items()]))


if __name__ == "__main__":
    main()
