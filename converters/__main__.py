"""``python -m converters [CKPT | --model NAME]``: convert a checkpoint (default:
a small digits-sized CNN, or one of the reference networks), print the graph
summary and check the round trip."""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from graphnfn.modules import ViT

from . import ConversionError, from_graph, load_checkpoint, to_graph
from .reference_nets import GPT, resnet18


def small_cnn() -> nn.Module:
    """A CNN for 8x8 digits in the style of the Small CNN Zoo."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()


MODELS = {
    "cnn": ("a small CNN for 8x8 digits", small_cnn),
    "resnet18": ("ResNet-18 (torchvision layout, random weights)", resnet18),
    "vit": ("a 1-block, 2-head ViT on 8x8 images", lambda: ViT(image_size=8, patch=4, in_channels=1, dim=8, depth=1, heads=2)),
    "gpt": ("a 2-block causal language model", GPT),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters", description=__doc__)
    parser.add_argument("checkpoint", nargs="?", help=".pt/.pth/.safetensors state_dict of an MLP")
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn", help="reference network when no checkpoint")
    args = parser.parse_args(argv)
    try:
        what, make = MODELS[args.model]
        source = args.checkpoint or make().eval()
        reference = load_checkpoint(source) if args.checkpoint else source.state_dict()
        print(f"converting {args.checkpoint or what}:\n{source if not args.checkpoint else ''}")
        start = time.perf_counter()
        g = to_graph(source)
        seconds = time.perf_counter() - start
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(g.summary())
    back = from_graph(g)
    exact = list(back) == list(reference) and all(
        back[k].dtype == reference[k].dtype and torch.equal(back[k], reference[k]) for k in reference)
    params = sum(t.numel() for t in reference.values())
    print(f"converted {params:,} values in {seconds * 1e3:.1f} ms; "
          f"round trip from_graph(to_graph(m)) == state_dict: {'bit-exact' if exact else 'MISMATCH'} "
          f"({len(back)} tensors)")
    return 0 if exact else 2


if __name__ == "__main__":
    sys.exit(main())
