"""Command line: make a zoo (rerunning the same command on the same DIR resumes), or summarise one.

    python -m graphnfn.zoo siren --dataset digits --out zoos/siren-digits
    python -m graphnfn.zoo cnn --dataset fashion-mnist --out zoos/cnn-fmnist --networks 2000 --epochs 20
    python -m graphnfn.zoo transformer --dataset digits --out zoos/vit-digits --limit 50
    python -m graphnfn.zoo info zoos/siren-digits

Many workers, one directory (a Slurm array, or torchrun's ranks without the flags):

    python -m graphnfn.zoo cnn --out zoos/cnn --num-shards 8 --shard-index $SLURM_ARRAY_TASK_ID
    torchrun --nproc_per_node 4 -m graphnfn.zoo cnn --out zoos/cnn
    python -m graphnfn.zoo verify zoos/cnn
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter

import torch

from .makers import INITS, SIREN_OPTIONS, make_classifier_zoo, make_siren_zoo, siren_recipe
from .source import Zoo
from .workers import verify, worker_device, worker_share

DATASET_CHOICES = ("digits", "fashion-mnist", "mnist")


def _psnr(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default="digits")
    p.add_argument("--data-dir", default=None, help="directory of the IDX files (default for fashion-mnist: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", required=True, help="zoo directory (created; rerun to resume)")
    p.add_argument("--limit", type=int, default=None, help="make at most N entries (INRs or networks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads; 1 is fastest for small batches and tiny networks on a busy CPU")
    p.add_argument("--no-progress", action="store_true", default=False)
    p.add_argument("--num-shards", type=int, default=None,
                   help="N workers fill --out together, this one makes every N-th shard "
                        "(default: torchrun's WORLD_SIZE, else 1)")
    p.add_argument("--shard-index", type=int, default=None,
                   help="this worker's index, 0..N-1 (default: torchrun's RANK, else 0)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m graphnfn.zoo", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="kind", required=True)
    # SIREN options left out take the data set's recipe (makers.SIREN_RECIPES)
    s = sub.add_parser("siren", help="one SIREN (2-32-32-1, sine) per image", argument_default=argparse.SUPPRESS)
    _common(s)
    s.add_argument("--init", choices=INITS, help="independent: own random init per INR; shared: one seeded init for all; "
                   "shared-permuted: the shared init with each INR's hidden neurons in a random order")
    s.add_argument("--resolution", type=int, help="fit images resized to R x R")
    s.add_argument("--per-image", type=int, help="K INRs per image (different seeds; splits stay by image)")
    s.add_argument("--steps", type=int, help="maximum Adam steps per INR")
    s.add_argument("--lr", type=float)
    s.add_argument("--w0", type=float)
    s.add_argument("--target-psnr", type=_psnr, help="stop an INR at this PSNR in dB ('none': always run --steps)")
    s.add_argument("--shard-size", type=int, default=None,
                   help="INRs per shard (= per fitting batch); default 128 on the CPU, 4096 on a GPU")
    for kind in ("cnn", "transformer"):
        c = sub.add_parser(kind, help=f"{kind} classifiers with sampled hyperparameters, metrics at several epochs")
        _common(c)
        c.add_argument("--networks", type=int, default=1000)
        c.add_argument("--epochs", type=int, default=20)
        c.add_argument("--batch-size", type=int, default=128)
        c.add_argument("--shard-size", type=int, default=64, help="networks per shard")
    i = sub.add_parser("info", help="summarise a zoo directory")
    i.add_argument("dir")
    v = sub.add_parser("verify", help="check that a zoo is complete and every entry is in it exactly once "
                                      "(exit status 1 if not)")
    v.add_argument("dir")
    return top


def info(path: str) -> None:
    zoo = Zoo(path)
    print(f"{path}: {zoo.config['kind']} zoo of {zoo.config['dataset']}, {len(zoo)} entries "
          f"(seed {zoo.config['seed']})")
    print("splits:", dict(Counter(r["split"] for r in zoo.records)))
    if zoo.config["kind"] == "siren":
        psnr = sorted(r["metrics"]["psnr"] for r in zoo.records)
        print(f"PSNR dB: median {statistics.median(psnr):.1f}, 10th percentile {psnr[len(psnr) // 10]:.1f}")
    else:
        final = [r["metrics"]["test_accuracy"] for r in zoo.records if r["final"]]
        print(f"final test accuracy: median {statistics.median(final):.3f}, min {min(final):.3f}, max {max(final):.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.kind == "info":
        info(args.dir)
        return 0
    if args.kind == "verify":
        report = verify(args.dir)
        for line in report.problems + [f"note: {n}" for n in report.notes]:
            print(line)
        print(f"{args.dir}: " + (f"complete, {report.entries} entries in {report.shards} shards, each once"
                                 if report.ok else "INCOMPLETE or DAMAGED"))
        return 0 if report.ok else 1
    try:
        num_shards, shard_index = worker_share(args.num_shards, args.shard_index)
    except ValueError as err:
        parser().error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(out=args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, limit=args.limit,
                  shard_size=args.shard_size, device=worker_device(args.device), progress=not args.no_progress,
                  num_shards=num_shards, shard_index=shard_index)
    if args.kind == "siren":
        given = {k: v for k, v in vars(args).items() if k in SIREN_OPTIONS}
        make_siren_zoo(recipe=siren_recipe(args.dataset, **given), **common)
    else:
        make_classifier_zoo(args.kind, networks=args.networks, epochs=args.epochs, batch_size=args.batch_size, **common)
    if num_shards > 1:
        print(f"worker {shard_index} of {num_shards}: its shards are in {args.out} "
              f"(python -m graphnfn.zoo verify {args.out} once every worker has finished)")
    else:
        print(f"zoo ready in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
