"""Conversion speed: network -> NeuralGraph -> state_dict, on this machine.

    python -m benchmarks.conversion [--repeat 5] [--out benchmarks/results/conversion.json]

Prints a table (parameters, nodes, edges, graph MB, seconds, best of
``--repeat``) and writes JSON. The DAG cases: ResNet-18 (torchvision's layout,
11.7M parameters) through the torch.fx path, and a 6-block 256-wide ViT (8
heads, 32x32 images in 4x4 patches) with hand-written attention; both should
convert in under a second on the project's 2-core CPU. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

import torch
from torch import nn

import converters
from benchmarks.measure import timed_in_turn, write_results
from converters.reference_nets import resnet18
from graphnfn.modules import ViT

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11(num_classes: int = 10) -> nn.Module:
    """VGG-11 with BatchNorm for 32x32 inputs (9.2M conv parameters)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


def wide_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def siren() -> nn.Module:
    from graphnfn import Sine

    return nn.Sequential(nn.Linear(2, 32), Sine(), nn.Linear(32, 32), Sine(), nn.Linear(32, 1))


CASES = {"VGG-11 (BN, CIFAR)": vgg11, "MLP 784-2048-2048-10": wide_mlp, "SIREN 2-32-32-1": siren,
         "ResNet-18 (ImageNet)": resnet18, "ViT 6x256, 8 heads": lambda: ViT(image_size=32, patch=4, dim=256, heads=8, depth=6)}


def graph_bytes(g) -> int:
    return sum(v.numel() * v.element_size() for _, v in g if isinstance(v, torch.Tensor))


def conversion_row(name: str, model: nn.Module, g, repeat: int, **steps: Callable[[], object]) -> dict:
    """A table row: the sizes of ``model`` and of its graph ``g``, and the seconds of
    to_graph, from_graph and any other ``steps`` (best of ``repeat``, timed in turn)."""
    times = timed_in_turn({"to_graph_s": lambda: converters.to_graph(model), **steps,
                           "from_graph_s": lambda: converters.from_graph(g)}, repeat, "cpu")
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "nodes": g.num_nodes,
            "edges": g.num_edges, "graph_mb": graph_bytes(g) / 2**20, **times}


def run(repeat: int) -> list[dict]:
    rows = []
    for name, make in CASES.items():
        model = make().eval()
        rows.append(conversion_row(name, model, converters.to_graph(model), repeat))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/conversion.json")
    args = parser.parse_args()
    rows = run(args.repeat)
    print(f"{'model':<24}{'params':>12}{'nodes':>9}{'edges':>11}{'graph MB':>10}{'to_graph s':>12}{'from_graph s':>14}")
    for r in rows:
        print(f"{r['model']:<24}{r['parameters']:>12,}{r['nodes']:>9,}{r['edges']:>11,}{r['graph_mb']:>10.1f}"
              f"{r['to_graph_s']:>12.3f}{r['from_graph_s']:>14.3f}")
    write_results(args.out, "cpu", {"repeat": args.repeat, "load_average": os.getloadavg()}, rows=rows)


if __name__ == "__main__":
    main()
