"""Conversion speed of Hugging Face models (torch.export path), on this machine.

    python -m benchmarks.hf_conversion [--repeat 5] [--out benchmarks/results/hf_conversion.json]

A 6-layer, 256-wide BERT (8 heads, MLP 1024, 16 tokens) and ViT (8 heads, MLP
1024, 32x32 images in 4x4 patches), random weights from their configs: the
first conversion in the process, the best of ``--repeat`` (each includes
``torch.export``, also timed alone) and ``from_graph``. The target is under
2 s per conversion on the project's 2-core CPU. Needs ``transformers``; not
part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import transformers

import converters
from benchmarks.conversion import conversion_row
from benchmarks.measure import write_results
from converters.hf import example_inputs


def bert() -> torch.nn.Module:
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024,
        num_labels=10))


def vit() -> torch.nn.Module:
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=4, num_channels=3, hidden_size=256, num_hidden_layers=6, num_attention_heads=8,
        intermediate_size=1024, num_labels=10))


CASES = {"BERT 6x256, 8 heads": bert, "ViT 6x256, 8 heads (32x32, 4x4 patches)": vit}


def run(repeat: int) -> list[dict]:
    rows = []
    for name, make in CASES.items():
        torch.manual_seed(0)
        model = make().eval()
        start = time.perf_counter()
        g = converters.to_graph(model)
        first = time.perf_counter() - start
        row = conversion_row(name, model, g, repeat,
                             export_s=lambda: torch.export.export(model, (), example_inputs(model), strict=False))
        rows.append({**row, "first_to_graph_s": first})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/hf_conversion.json")
    args = parser.parse_args()
    rows = run(args.repeat)
    print(f"{'model':<42}{'params':>12}{'nodes':>8}{'edges':>11}{'graph MB':>10}{'first s':>9}{'to_graph s':>12}"
          f"{'export s':>10}{'from_graph s':>14}")
    for r in rows:
        print(f"{r['model']:<42}{r['parameters']:>12,}{r['nodes']:>8,}{r['edges']:>11,}{r['graph_mb']:>10.1f}"
              f"{r['first_to_graph_s']:>9.3f}{r['to_graph_s']:>12.3f}{r['export_s']:>10.3f}{r['from_graph_s']:>14.3f}")
    write_results(args.out, "cpu", {"transformers": transformers.__version__, "repeat": args.repeat,
                                    "load_average": os.getloadavg()}, rows=rows)


if __name__ == "__main__":
    main()
