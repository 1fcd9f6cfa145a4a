"""Sparse graph layers vs a dense relational-transformer baseline.

    python -m benchmarks.graph_models [--device cpu|cuda] [--d 64] [--repeat 3] [--cases CASE ...] [--no-scaling]

Per case, one layer of each kind at the same width d (sparse attention twice: its per-edge
terms kept, and recomputed in backward): time of forward+backward
(best of --repeat, after a warm-up) and peak memory of those steps above what
the inputs already held (:class:`benchmarks.measure.PeakMemory`), each
measurement in a fresh process. Cases marked sparse-only skip the dense
layer, whose [B, N, N, d] edge tensor alone is reported instead. Also the
sparse layer's cost against the number of edges. Prints a table and writes
benchmarks/results/graph_models.json. Not part of the tests.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import converters
from converters.reference_nets import resnet18
import graphnfn
from benchmarks.dense_baseline import DenseRelationalAttention, densify
from benchmarks.measure import in_fresh_process, timed, write_results
from graphnfn.nn import EdgePNAConv, SparseRelationalAttention


def siren():
    return nn.Sequential(nn.Linear(2, 32), graphnfn.Sine(), nn.Linear(32, 32), graphnfn.Sine(), nn.Linear(32, 1))


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def mlp_of(width: int, hidden_layers: int = 2):
    def make():
        layers, d_in = [], 64
        for _ in range(hidden_layers):
            layers += [nn.Linear(d_in, width), nn.ReLU()]
            d_in = width
        return nn.Sequential(*layers, nn.Linear(d_in, 10))
    return make


# name -> (network maker, batch size, run the dense layer too)
CASES = {
    "SIREN (67 nodes)": (siren, 64, True),
    "CNN zoo (59 nodes)": (small_cnn, 64, True),
    "MLP 64-250-250-10": (mlp_of(250), 4, True),
    "MLP 64-1000x2-10": (mlp_of(1000), 1, True),
    "MLP 64-250x8-10": (mlp_of(250, 8), 1, True),
    "ResNet-18": (resnet18, 1, False),
}
SCALING = [mlp_of(w) for w in (64, 128, 256, 512, 1024)]
LAYERS = ("pna", "sparse-attention", "sparse-recompute", "dense-attention")


def _layer(kind: str, d: int, heads: int) -> nn.Module:
    return {"pna": lambda: EdgePNAConv(d), "sparse-attention": lambda: SparseRelationalAttention(d, heads, recompute=False),
            "sparse-recompute": lambda: SparseRelationalAttention(d, heads, recompute=True),
            "dense-attention": lambda: DenseRelationalAttention(d, heads)}[kind]()


def measure(kind: str, case: str, index: int, d: int, heads: int, device: str, repeat: int,
            batch_size: int | None = None) -> dict:
    """One layer on one case (a CASES name, or "-" for SCALING[index]); ``batch_size``
    overrides the case's."""
    make, case_batch = _case(case, index)
    batch_size = batch_size or case_batch
    torch.manual_seed(0)
    graph = converters.to_graph(make())
    batch = graphnfn.collate([graph] * batch_size).to(device)
    layer = _layer(kind, d, heads).to(device)
    h = torch.randn(batch.num_nodes, d, device=device, requires_grad=True)
    e = torch.randn(batch.num_edges, d, device=device, requires_grad=True)
    if kind == "dense-attention":
        hd, ed, mask = densify(h.detach(), e.detach(), batch.edge_index, batch.batch)
        hd.requires_grad_(), ed.requires_grad_()
        outputs = lambda: layer(hd, ed, mask)  # noqa: E731
    else:
        outputs = lambda: layer(h, batch.edge_index, e, batch.batch, batch.num_graphs)  # noqa: E731
    seconds, peak = timed(lambda: sum(t.sum() for t in outputs()).backward(), repeat, device)
    return {"layer": kind, "nodes": graph.num_nodes, "edges": graph.num_edges, "batch": batch_size,
            "ms": seconds * 1e3, "peak_mib": peak / 2**20}


def _case(case: str, index: int):
    """(network maker, batch size) of a named case, or of SCALING[index] for case "-"."""
    return (SCALING[index], 1) if case == "-" else CASES[case][:2]


def dense_edge_tensor(case: str, d: int) -> dict:
    """What the dense layer would need for its edge states alone, [B, N, N, d] in float32."""
    make, batch_size, _ = CASES[case]
    n = converters.to_graph(make()).num_nodes
    return {"layer": "dense-attention", "nodes": n, "batch": batch_size,
            "skipped": f"not run: its [B, N, N, d] edge tensor alone is {batch_size * n * n * d * 4 / 2**30:,.0f} GiB"}


def run(cases: list[str], device: str, d: int = 64, heads: int = 4, repeat: int = 3, scaling: bool = True,
        fresh: bool = True, batch_size: int | None = None) -> tuple[list[dict], list[dict]]:
    """Rows of every layer on ``cases`` (CASES names) and, with ``scaling``, of the sparse layer on
    SCALING; each measurement in a fresh process unless ``fresh`` is False (quick dry runs);
    ``batch_size`` overrides the cases' batch sizes."""
    call = in_fresh_process if fresh else (lambda fn, *args: fn(*args))

    def one(kind: str, case: str, index: int = 0) -> dict:
        return call(measure, kind, case, index, d, heads, device, repeat, batch_size)

    rows = [{"case": case, **(one(kind, case) if kind != "dense-attention" or CASES[case][2]
                              else dense_edge_tensor(case, d))}
            for case in cases for kind in LAYERS]
    cost = [{"case": "scaling", **one("sparse-attention", "-", i)} for i in range(len(SCALING))] if scaling else []
    return rows, cost


def print_table(rows: list[dict], device: str, d: int, heads: int) -> None:
    print(f"device {device}, d={d}, heads={heads}, one layer, forward+backward")
    print(f"{'case':<22}{'layer':<18}{'batch':>6}{'nodes':>7}{'edges':>11}{'ms':>10}{'peak MiB':>10}")
    for r in rows:
        if "error" in r or "skipped" in r:
            print(f"{r['case']:<22}{r.get('layer', ''):<18}  {r.get('skipped') or 'failed: ' + r['error']}")
            continue
        print(f"{r['case']:<22}{r['layer']:<18}{r['batch']:>6}{r['nodes']:>7,}{r['edges']:>11,}{r['ms']:>10.1f}"
              f"{r['peak_mib']:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE",
                        help=f"a subset of: {', '.join(CASES)}")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the cost-against-edges rows")
    parser.add_argument("--out", default="benchmarks/results/graph_models.json")
    args = parser.parse_args()
    rows, scaling = run(args.cases, args.device, args.d, args.heads, args.repeat, args.scaling)
    print_table(rows + scaling, args.device, args.d, args.heads)
    write_results(args.out, args.device, {"d": args.d, "heads": args.heads, "repeat": args.repeat},
                  rows=rows, scaling=scaling)


if __name__ == "__main__":
    main()
