"""Speed and memory of the parameter-sharing models (and the graph models, when present) at
roughly equal parameter count, on the same weight spaces.

    python -m benchmarks.paramshare [--budget 100000] [--batch 32] [--repeat 5] [--device cpu]
                                    [--out benchmarks/results/paramshare.json]

Each model's width (``hidden``; ``d_hidden`` for graph models) is chosen so that its
parameter count is as close to ``--budget`` as the width allows. Every (weight space, model)
pair runs in a fresh process: forward + backward of an invariant readout on a batch of
random networks, the median of ``--repeat`` timed runs after one warm-up; peak memory is
that of the warm-up step (:class:`benchmarks.measure.PeakMemory`; on the CPU it includes
allocator slack). Prints a table and writes JSON.
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from benchmarks.measure import PeakMemory, in_fresh_process, write_results
from graphnfn import paramshare as ps

# the activations of network() below: they decide the monomial models' group
MLP = ps.WeightSpaceSpec(((32, 2), (32, 32), (1, 32)), ((32,), (32,), (1,)), ("sine", "sine"))
CNN = ps.WeightSpaceSpec(((8, 1, 3, 3), (8, 8, 3, 3), (10, 8)), ((8,), (8,), (10,)), ("relu", "relu"))
TRANSFORMER = ps.AttentionSpec.from_dims([(2, 16, 8, 8, 32)])
SPACES = {"SIREN 2-32-32-1": MLP, "CNN 1-8-8-10 (3x3)": CNN, "encoder block h=2 D=16 D_a=32": TRANSFORMER}
MODELS = {"SIREN 2-32-32-1": ["nfn-np", "nfn-hnp", "nft", "monomial", "magep", "stat", "flat-mlp", "graph-pna",
                              "graph-transformer"],
          "CNN 1-8-8-10 (3x3)": ["nfn-np", "nfn-hnp", "nft", "monomial", "magep", "stat", "flat-mlp", "graph-pna",
                                 "graph-transformer"],
          "encoder block h=2 D=16 D_a=32": ["transformer-nfn", "stat", "flat-mlp"]}
WIDTHS = {"nft": range(4, 129, 4), "graph-pna": range(4, 257, 4), "graph-transformer": range(4, 257, 4)}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make(name: str, spec, width: int) -> nn.Module:
    if name.startswith("graph-"):
        from graphnfn.models import GraphNFN

        return GraphNFN(d_out=10, backbone=name[6:], readout="invariant", d_hidden=width)
    return ps.build(name, spec, 10, hidden=width)


def width_for(name: str, spec, budget: int) -> int:
    """The width whose parameter count is closest to ``budget`` (counts grow with width)."""
    best = None
    for width in WIDTHS.get(name, range(1, 1025)):
        n = count(make(name, spec, width))
        if best is None or abs(n - budget) < abs(best[1] - budget):
            best = (width, n)
        if n > budget:
            break
    return best[0]


def network(spec: ps.WeightSpaceSpec, ws: ps.WeightSpace, i: int) -> nn.Module:
    """Sample ``i`` of ``ws`` as a torch network: conv layers (padding 1, ReLU), global
    average pooling, then linear layers; sine activations for the MLP (a SIREN)."""
    from graphnfn import Sine

    layers: list[nn.Module] = []
    for l, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        w, b = w[i, 0], b[i, 0]
        if w.dim() == 4:
            layer = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=1)
        else:
            if layers and isinstance(layers[-2], nn.Conv2d):
                layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            layer = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        layers.append(layer)
        if l < len(ws.weights) - 1:
            layers.append(nn.ReLU() if len(spec.weight_shapes[0]) > 2 else Sine())
    return nn.Sequential(*layers)


def inputs(name: str, spec, batch: int, device: str):
    ws = ps.randn_space(spec, batch, scale=0.3, generator=torch.Generator().manual_seed(0))
    if not name.startswith("graph-"):
        return ws.to(device)
    import converters
    import graphnfn

    return graphnfn.collate([converters.to_graph(network(spec, ws, i)) for i in range(batch)]).to(device)


def measure(space: str, name: str, budget: int, batch: int, repeat: int, device: str, threads: int) -> dict:
    """One (space, model) measurement; meant to run in its own process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = SPACES[space]
    width = width_for(name, spec, budget)
    model = make(name, spec, width).to(device)
    x = inputs(name, spec, batch, device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with PeakMemory(device) as peak:
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"space": space, "model": name, "width": width, "parameters": count(model),
            "fwd_bwd_ms": 1000 * statistics.median(times), "peak_mb": peak.bytes / 2**20}


def run(budget: int, batch: int, repeat: int, device: str, threads: int) -> list[dict]:
    rows = []
    for space, names in MODELS.items():
        for name in names:
            rows.append({"space": space, "model": name,
                         **in_fresh_process(measure, space, name, budget, batch, repeat, device, threads)})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['space']:<32}{r['model']:<19}  not run: {r['error']}"
    return (f"{r['space']:<32}{r['model']:<19}{r['width']:>6}{r['parameters']:>11,}{r['fwd_bwd_ms']:>12.1f}"
            f"{r['peak_mb']:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=100000, help="target parameter count")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU intra-op threads")
    parser.add_argument("--out", default="benchmarks/results/paramshare.json")
    args = parser.parse_args()
    print(f"{'weight space':<32}{'model':<19}{'width':>6}{'params':>11}{'fwd+bwd ms':>12}{'peak MB':>10}")
    rows = run(args.budget, args.batch, args.repeat, args.device, args.threads)
    write_results(args.out, args.device, {"threads": args.threads, "batch": args.batch, "budget": args.budget,
                                          "repeat": args.repeat}, rows=rows)


if __name__ == "__main__":
    main()
