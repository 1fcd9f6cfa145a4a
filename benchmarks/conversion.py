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
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

import converters
from converters.reference_nets import ViT, resnet18

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
         "ResNet-18 (ImageNet)": resnet18, "ViT 6x256, 8 heads": ViT}


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def graph_bytes(g) -> int:
    return sum(v.numel() * v.element_size() for _, v in g if isinstance(v, torch.Tensor))


def run(repeat: int) -> list[dict]:
    rows = []
    for name, make in CASES.items():
        model = make().eval()
        g = converters.to_graph(model)
        rows.append({
            "model": name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "nodes": g.num_nodes,
            "edges": g.num_edges,
            "graph_mb": graph_bytes(g) / 2**20,
            "to_graph_s": best_of(lambda: converters.to_graph(model), repeat),
            "from_graph_s": best_of(lambda: converters.from_graph(g), repeat),
        })
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "repeat": args.repeat, "load_average": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
