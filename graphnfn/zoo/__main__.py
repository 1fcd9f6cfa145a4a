"""Command line: make a zoo (rerunning the same command on the same DIR resumes), or summarise one.

    python -m graphnfn.zoo siren --dataset digits --out zoos/siren-digits
    python -m graphnfn.zoo cnn --dataset fashion-mnist --out zoos/cnn-fmnist --networks 2000 --epochs 20
    python -m graphnfn.zoo transformer --dataset digits --out zoos/vit-digits --limit 50
    python -m graphnfn.zoo info zoos/siren-digits
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter

import torch

from .makers import INITS, SIREN_DEFAULTS, make_classifier_zoo, make_siren_zoo
from .siren import SirenFit
from .source import Zoo

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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m graphnfn.zoo", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="kind", required=True)
    # SIREN options left out take the data set's default (makers.SIREN_DEFAULTS)
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
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(out=args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, limit=args.limit,
                  shard_size=args.shard_size, device=args.device, progress=not args.no_progress)
    if args.kind == "siren":
        given = {k: v for k, v in vars(args).items() if k in SIREN_DEFAULTS[args.dataset]}
        opts = {**SIREN_DEFAULTS[args.dataset], **given}
        fit = SirenFit(steps=opts["steps"], lr=opts["lr"], w0=opts["w0"], target_psnr=opts["target_psnr"])
        make_siren_zoo(init=opts["init"], resolution=opts["resolution"], per_image=opts["per_image"], fit=fit, **common)
    else:
        make_classifier_zoo(args.kind, networks=args.networks, epochs=args.epochs, batch_size=args.batch_size, **common)
    print(f"zoo ready in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
