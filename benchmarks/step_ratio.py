"""Training-step time of the graph models against NFN-HNP on the same networks, in one process.

    python -m benchmarks.step_ratio [--device cpu|cuda] [--repeat 10] [--batch 64] [--threads N]
                                    [--compile] [--profile K] [--out benchmarks/results/step_ratio.json]

Per batch (64 random SIRENs 2-32-32-1; 64 random Small-CNN-Zoo CNNs, three 3x3 convolutions of
16 channels, global average pooling, a linear layer to 10), the experiments' default models:
``registry.build(name, graphs, 10, d_hidden=32, n_layers=3, heads=4, fourier=16)`` for the graph
models (``pna``, ``transformer``, ``sign-gnn``), ``paramshare.build("nfn-hnp", spec, 10, hidden=32, fourier=16)``
(the reference: the same Fourier inputs) and the same NFN on raw weights (``fourier=0``).
One step is what :func:`graphnfn.training.fit` does per batch, less clipping and schedule:
forward, cross-entropy on fixed random labels, backward, AdamW. The models take turns
(:func:`benchmarks.measure.timed_in_turn`), each keeping its best of ``--repeat``, so a loaded
machine slows them alike; ``ratio`` = step time / nfn-hnp's. ``--compile``: every model
under ``torch.compile`` too (rows marked compiled; compile time excluded). ``--profile K``:
per model, the K operators with the most self time over a few steps (torch.profiler,
forward and backward), with their share. Prints tables and writes JSON. Not part of the tests.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import converters
import graphnfn
from benchmarks.measure import timed_in_turn, write_results
from graphnfn import paramshare as ps
from graphnfn import registry
from graphnfn.registry import GRAPH_MODELS
from graphnfn.zoo import make_cnn, make_siren

KINDS = {"SIREN 2-32-32-1": make_siren, "CNN zoo 1-16-16-16-10": make_cnn}
MODELS = GRAPH_MODELS + ("nfn-hnp", "nfn-hnp raw")
REFERENCE = "nfn-hnp"


def make_model(name: str, graphs, spec) -> nn.Module:
    """A model of MODELS at the experiments' defaults, with 10 outputs."""
    if name in GRAPH_MODELS:
        return registry.build(name, graphs, 10, d_hidden=32, n_layers=3, heads=4, fourier=16)
    return ps.build("nfn-hnp", spec, 10, hidden=32, fourier=0 if name.endswith("raw") else 16)


def contenders(kind: str, batch: int, device: str) -> dict[str, tuple[nn.Module, object]]:
    """name -> (model, its input) for one batch of ``batch`` random networks of ``kind``."""
    torch.manual_seed(0)
    nets = [KINDS[kind]() for _ in range(batch)]
    graphs = graphnfn.collate([converters.to_graph(net) for net in nets]).to(device)
    space = ps.concat([converters.to_weight_space(net) for net in nets], 0).to(device)
    return {name: (make_model(name, graphs, space.spec).to(device), graphs if name in GRAPH_MODELS else space)
            for name in MODELS}


def training_step(model: nn.Module, inputs, labels: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        opt.step()
    return step


def run(device: str, batch: int, repeat: int, compile: bool = False) -> list[dict]:
    """One row per (batch kind, model[, compiled]): parameters, ms per step, ratio to nfn-hnp."""
    rows = []
    for kind in KINDS:
        models = contenders(kind, batch, device)
        labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
        steps = {name: training_step(model, x, labels) for name, (model, x) in models.items()}
        if compile:
            steps.update({f"{name} compiled": training_step(torch.compile(model), x, labels)
                          for name, (model, x) in models.items()})
        seconds = timed_in_turn(steps, repeat, device)
        for name, s in seconds.items():
            model = models[name.removesuffix(" compiled")][0]
            reference = f"{REFERENCE} compiled" if name.endswith(" compiled") else REFERENCE
            rows.append({"batch": kind, "model": name, "parameters": sum(p.numel() for p in model.parameters()),
                         "ms": 1e3 * s, "ratio": s / seconds[reference]})
    return rows


def profile(device: str, batch: int, top: int, steps: int = 3) -> list[dict]:
    """Per (batch kind, model): the ``top`` operators by self time over ``steps`` training steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    key = "self_device_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    rows = []
    for kind in KINDS:
        labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
        for name, (model, x) in contenders(kind, batch, device).items():
            step = training_step(model, x, labels)
            step()
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(steps):
                    step()
            events = [e for e in prof.key_averages() if getattr(e, key) > 0]
            total = sum(getattr(e, key) for e in events)
            for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
                rows.append({"batch": kind, "model": name, "op": e.key,
                             "ms_per_step": getattr(e, key) / 1e3 / steps, "share": getattr(e, key) / total})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time every model under torch.compile")
    parser.add_argument("--profile", type=int, default=0, metavar="K", help="also list each model's top K operators")
    parser.add_argument("--out", default="benchmarks/results/step_ratio.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.device, args.batch, args.repeat, args.compile)
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}, best of {args.repeat}, "
          "forward + backward + AdamW")
    print(f"{'batch':<24}{'model':<24}{'parameters':>11}{'ms':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['batch']:<24}{r['model']:<24}{r['parameters']:>11,}{r['ms']:>10.1f}{r['ratio']:>8.2f}")
    ops = profile(args.device, args.batch, args.profile) if args.profile else []
    if ops:
        print(f"\n{'batch':<24}{'model':<14}{'operator (self time)':<40}{'ms/step':>9}{'share':>7}")
        for r in ops:
            print(f"{r['batch']:<24}{r['model']:<14}{r['op']:<40}{r['ms_per_step']:>9.1f}{r['share']:>7.0%}")
    write_results(args.out, args.device, {"batch": args.batch, "repeat": args.repeat, "compile": args.compile},
                  rows=rows, profile=ops)


if __name__ == "__main__":
    main()
