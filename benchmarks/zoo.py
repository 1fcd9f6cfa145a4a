"""SIREN zoo throughput: INRs per second and PSNR of the data sets' default recipes.

    python -m benchmarks.zoo [--datasets digits fashion-mnist] [--count 2048] [--device auto] [--threads N]

Makes a SIREN zoo of ``count`` INRs per data set with :func:`graphnfn.zoo.make_siren_zoo`
and the data set's recipe (:func:`graphnfn.zoo.siren_recipe`, as the command line), end to end
(data loading, fitting, writing shards) into a temporary directory, and reports
INRs/s with the median and 10th-percentile PSNR. Writes JSON
(benchmarks/results/zoo.json) and prints a table. Fashion-MNIST needs its IDX
files (Debian: ``apt-get install dataset-fashion-mnist``); a data set that cannot
be loaded is reported as skipped. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import collections
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.measure import device_name, write_results
from graphnfn.devices import resolve_device
from graphnfn.zoo import Zoo, make_siren_zoo


def summary(zoo: Zoo) -> dict:
    """A SIREN zoo's size, recipe, PSNR (median, 10th percentile), mean fitting steps and split sizes."""
    records, config = zoo.records, zoo.config
    psnr = sorted(r["metrics"]["psnr"] for r in records)
    return {"inrs": len(records), **config["hparams"], "per_image": config["per_image"],
            "shard_size": config["shard_size"], "median_psnr": statistics.median(psnr),
            "p10_psnr": psnr[len(psnr) // 10], "mean_steps": statistics.fmean(r["metrics"]["steps"] for r in records),
            "splits": dict(collections.Counter(r["split"] for r in records))}


def run(dataset: str, count: int, device: str, shard_size: int | None, data_dir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_siren_zoo(Path(tmp) / "zoo", dataset, data_dir, limit=count, shard_size=shard_size, device=device,
                       progress=False)
        seconds = time.perf_counter() - start
        row = summary(Zoo(Path(tmp) / "zoo"))
    return {"dataset": dataset, **row, "seconds": seconds, "inrs_per_s": row["inrs"] / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    p.add_argument("--count", type=int, default=2048, help="INRs per data set")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--shard-size", type=int, default=None, help="default: the maker's (128 on the CPU, 4096 on a GPU)")
    p.add_argument("--out", default="benchmarks/results/zoo.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows, skipped = [], {}
    for dataset in args.datasets:
        try:
            rows.append(run(dataset, args.count, str(device), args.shard_size))
        except FileNotFoundError as err:
            skipped[dataset] = str(err)
    write_results(args.out, device, {"platform": platform.platform()}, results=rows, skipped=skipped)
    print(f"{'data set':14} {'INRs':>6} {'res':>4} {'K':>3} {'init':>11} {'batch':>5} {'s':>8} {'INRs/s':>8} "
          f"{'median dB':>9} {'p10 dB':>7} {'steps':>6}")
    for r in rows:
        print(f"{r['dataset']:14} {r['inrs']:6d} {r['resolution']:4d} {r['per_image']:3d} {r['init']:>11} {r['shard_size']:5d} "
              f"{r['seconds']:8.1f} {r['inrs_per_s']:8.1f} {r['median_psnr']:9.1f} {r['p10_psnr']:7.1f} "
              f"{r['mean_steps']:6.0f}")
    for dataset, why in skipped.items():
        print(f"{dataset}: skipped ({why})")
    print(f"machine: {device_name(device)}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
