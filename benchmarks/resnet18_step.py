"""One training step of a whole GraphNFN on the ResNet-18 graph (12,523 neurons,
1.9M edges, 7x7 stem kernels), per backbone.

    python -m benchmarks.resnet18_step [--device cpu|cuda] [--d 32] [--layers 3] [--fourier 16] [--repeat 2]

Time of forward + backward + Adam step (best of --repeat, after a warm-up) and
the peak memory of those steps above what the graph and model already held
(:class:`benchmarks.measure.PeakMemory`), each backbone in a fresh process. Prints a table and
writes benchmarks/results/resnet18_step.json. Not part of the tests.
"""
from __future__ import annotations

import argparse

import torch

import converters
import graphnfn
from benchmarks.measure import in_fresh_process, timed, write_results
from converters.reference_nets import resnet18
from graphnfn.models import GraphNFN


def measure(backbone: str, d: int, layers: int, fourier: int, device: str, repeat: int) -> dict:
    torch.manual_seed(0)
    batch = graphnfn.collate([converters.to_graph(resnet18())]).to(device)
    net = GraphNFN(1, backbone=backbone, d_hidden=d, n_layers=layers, fourier=fourier, max_kernel=49).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad()
        net(batch).square().mean().backward()
        opt.step()

    seconds, peak = timed(step, repeat, device)  # the warm-up also creates Adam's state
    return {"backbone": backbone, "nodes": batch.num_nodes, "edges": batch.num_edges,
            "parameters": sum(p.numel() for p in net.parameters()), "s": seconds, "peak_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--fourier", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["transformer", "pna"])
    parser.add_argument("--out", default="benchmarks/results/resnet18_step.json")
    args = parser.parse_args()
    rows = [{"backbone": backbone, **in_fresh_process(measure, backbone, args.d, args.layers, args.fourier,
                                                      args.device, args.repeat)}
            for backbone in args.backbones]
    print(f"device {args.device}, d={args.d}, {args.layers} layers, fourier={args.fourier}, forward+backward+Adam")
    print(f"{'backbone':<14}{'nodes':>8}{'edges':>12}{'parameters':>12}{'s':>8}{'peak GiB':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['backbone']:<14}  failed: {r['error']}")
            continue
        print(f"{r['backbone']:<14}{r['nodes']:>8,}{r['edges']:>12,}{r['parameters']:>12,}{r['s']:>8.1f}{r['peak_gib']:>10.2f}")
    write_results(args.out, args.device, {"d": args.d, "layers": args.layers, "fourier": args.fourier,
                                          "repeat": args.repeat}, rows=rows)


if __name__ == "__main__":
    main()
