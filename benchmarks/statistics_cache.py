"""What keeping the per-tensor statistics of a fixed batch saves in a training step.

    python -m benchmarks.statistics_cache [--device cpu|cuda] [--repeat 3] [--threads N]
                                          [--out benchmarks/results/statistics_cache.json]

A graph model with ``tensor_stats="fourier"`` reads the ``stat`` baseline's statistics of every
weight tensor's Fourier features, which means sorting 33 channels of every weight of the batch.
They have no parameters, so :class:`graphnfn.statistics.TensorStatistics` keeps them on the
batch object and a training loop over fixed batches (the experiments' loaders) computes them
once. Per case, one training step (forward, cross-entropy on fixed random labels, backward,
AdamW) of the experiments' model on one batch, in turn: with the statistics kept from the
previous step ("kept") and computed anew ("computed"), best of ``--repeat``. Cases: 32 ViTs of
the transformer zoo (random init; pna, ``pool="layer"``) and 64 SIRENs 2-32-32-1 (sign-gnn,
``pool="layer"``). Prints a table and writes JSON. Not part of the tests.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import converters
import graphnfn
from benchmarks.measure import timed_in_turn, write_results
from graphnfn import registry
from graphnfn.statistics import forget_statistics
from graphnfn.zoo import make_siren, make_vit

CASES = {"32 ViTs (2 blocks, width 32)": ("pna", lambda: make_vit(8), 32),
         "64 SIRENs 2-32-32-1": ("sign-gnn", make_siren, 64)}


def run(device: str, repeat: int) -> list[dict]:
    rows = []
    for case, (name, make, batch) in CASES.items():
        torch.manual_seed(0)
        graphs = graphnfn.collate([converters.to_graph(make()) for _ in range(batch)]).to(device)
        model = registry.build(name, graphs, 10, d_hidden=32, n_layers=3, fourier=16, pool="layer",
                               tensor_stats="fourier").to(device)
        labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(forget: bool) -> None:
            if forget:
                forget_statistics(graphs)  # as a batch never seen before
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(graphs), labels).backward()
            opt.step()

        seconds = timed_in_turn({"kept": lambda: step(False), "computed": lambda: step(True)}, repeat, device)
        rows.append({"case": case, "model": name, "edges": graphs.num_edges, "kept_s": seconds["kept"],
                     "computed_s": seconds["computed"], "speedup": seconds["computed"] / seconds["kept"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/statistics_cache.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.device, args.repeat)
    print("| case | model | edges | step, statistics kept (s) | step, computed (s) | speedup |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['model']} | {r['edges']:,} | {r['kept_s']:.3f} | {r['computed_s']:.3f} "
              f"| {r['speedup']:.2f}x |")
    write_results(args.out, args.device, {"repeat": args.repeat}, rows=rows)


if __name__ == "__main__":
    main()
