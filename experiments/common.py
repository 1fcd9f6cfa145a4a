"""What every experiment shares: the model names, making (or reusing) the zoo, building a
model of either family by name, the loaders, and one training run.

The experiments are Sacred files (``python -m experiments.<task> with key=value``);
:func:`run_task` is also what :mod:`experiments.compare` calls for each model
and seed, so a comparison and a single run train in exactly the same way.
"""
from __future__ import annotations

import hashlib
import json
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphnfn import paramshare
from graphnfn.models import GraphNFN
from graphnfn.features import ProbeFeatures
from graphnfn.paramshare.align import AlignLinear
from graphnfn.devices import resolve_device
from graphnfn.training import FitResult, Task, WeightScaler, fit, split_batch
from graphnfn.zoo import WeightAugment, Zoo, graph_loader, weight_space_loader

GRAPH_MODELS = ("pna", "transformer")
PARAMSHARE_MODELS = ("nfn-np", "nfn-hnp", "nft", "monomial", "magep", "transformer-nfn", "stat", "flat-mlp")
#: sanity baselines beyond paramshare's stat and flat-mlp: flat-mlp trained on randomly permuted
#: copies (the literature's augmentation), and neuron matching + a linear model (no learning)
BASELINES = ("flat-mlp-aug", "align-linear")
MODELS = GRAPH_MODELS + PARAMSHARE_MODELS + BASELINES


def family(model: str) -> str:
    """"graph", "paramshare" (learned on weight spaces) or "align" (the non-learning baseline)."""
    if model in GRAPH_MODELS:
        return "graph"
    if model == "align-linear":
        return "align"
    if model in PARAMSHARE_MODELS + BASELINES:
        return "paramshare"
    raise ValueError(f"unknown model {model!r}: choose a graph model {GRAPH_MODELS}, a parameter-sharing model "
                     f"{PARAMSHARE_MODELS} or a baseline {BASELINES}")


def ensure_zoo(cfg: dict, kind: str, options: dict, make) -> Zoo:
    """The zoo at cfg['zoo'] if given; else the default zoo for ``kind`` and the
    maker ``options`` under zoos/ (one directory per distinct set of options),
    made by ``make(path)``: the makers resume, so a finished zoo is reused as it
    is and an interrupted one is completed."""
    if cfg["zoo"] is not None:
        if not Path(cfg["zoo"]).is_dir():
            raise FileNotFoundError(f"zoo directory {cfg['zoo']!r} does not exist")
        return Zoo(cfg["zoo"])
    digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    path = Path(cfg["zoo_root"]) / f"{kind}-{cfg['dataset']}-{digest}"
    make(path)
    return Zoo(path)


def build_model(cfg: dict, sample, d_out: int, readout: str, probe_inputs: torch.Tensor | None = None) -> nn.Module:
    """The model named by cfg['model'] for inputs like ``sample`` (a graph or a WeightSpace).
    Both families get the same Fourier encoding of the weights (``fourier``), except where a
    model's group admits none: positive scaling (monomial/magep on ReLU networks) reads raw
    weights. ``model.encoding`` says which encoding each model used."""
    zero_output = cfg["zero_output"] and readout == "equivariant"
    if family(cfg["model"]) == "graph":
        probe = ProbeFeatures(probes=probe_inputs) if cfg["probe"] else None
        graph_readout = {"invariant": "graph", "equivariant": "edge"}[readout]
        model = GraphNFN(d_out, backbone=cfg["model"], readout=graph_readout, d_hidden=cfg["d_hidden"],
                         n_layers=cfg["n_layers"], heads=cfg["heads"], fourier=cfg["fourier"],
                         positional=cfg["positional"], layer_embedding=cfg["layer_embedding"], probe=probe,
                         symmetry=cfg["symmetry"], zero_output=zero_output)
        model.encoding = f"fourier{cfg['fourier']}" if cfg["fourier"] else "raw"
        return model
    name = "flat-mlp" if cfg["model"] == "flat-mlp-aug" else cfg["model"]
    fourier = cfg["fourier"]
    if name in ("monomial", "magep") and paramshare.scaling_of(sample.spec) == "scale":
        fourier = 0
    return paramshare.build(name, sample.spec, d_out, readout, hidden=cfg["d_hidden"], fourier=fourier,
                            zero_output=zero_output)


def make_loaders(cfg: dict, zoo: Zoo, target, where=None, scale: bool = True) -> dict[str, list]:
    """Train/val/test batches of the model's family over the zoo records that
    satisfy ``where``, materialised once (conversion is not repeated every epoch;
    with ``augment`` the train split is re-drawn, re-permuted, every epoch).
    ``scale``: divide weights and biases by their train-set RMS (:class:`WeightScaler`)."""
    loader = graph_loader if family(cfg["model"]) == "graph" else weight_space_loader
    out = {}
    for split in ("train", "val", "test"):
        indices = zoo.indices(split, where)[: cfg["limit"]]
        permute = cfg["augment"] or cfg["model"] == "flat-mlp-aug"
        augment = WeightAugment(permute=True) if permute and split == "train" else None
        batches = loader(zoo, batch_size=cfg["batch_size"], shuffle=split == "train", indices=indices, target=target,
                         augment=augment, generator=torch.Generator().manual_seed(cfg["seed"]))
        out[split] = batches if augment is not None else list(batches)
    if scale:  # inputs of unit scale, from the train split's statistics
        scaler = WeightScaler(out["train"])
        out = {split: [scaler(b) for b in batches] if isinstance(batches, list) else _Mapped(batches, scaler)
               for split, batches in out.items()}
    return out


class _Mapped:
    """An iterable that applies ``fn`` to every batch of ``batches``, anew each epoch."""

    def __init__(self, batches, fn):
        self.batches, self.fn = batches, fn

    def __iter__(self):
        return (self.fn(b) for b in self.batches)

    def __len__(self):
        return len(self.batches)


def run_task(cfg: dict, task: Task, loaders: dict, model: nn.Module | None, _run=None) -> dict[str, Any]:
    """Train ``model`` for the step budget (or fit the align-linear baseline when ``model`` is
    None); log every evaluation to the Sacred run, save the best checkpoint as an artifact,
    return the summary the tables are made from."""
    torch.manual_seed(cfg["seed"])
    start = time.perf_counter()
    if model is None:
        result = fit_align_linear(loaders, task)
        encoding = "raw (aligned)"
    else:
        log = _run.log_scalar if _run is not None else None
        result = fit(model, loaders["train"], loaders["val"], loaders["test"], task, steps=cfg["steps"],
                     eval_every=cfg["eval_every"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                     device=cfg["device"], amp=cfg["amp"], log=log)
        encoding = model.encoding
    summary = {
        "model": cfg["model"], "family": family(cfg["model"]), "encoding": encoding, "seed": cfg["seed"],
        "task": task.name, "metric": task.main, "higher_is_better": task.higher_is_better, "test": result.test,
        "val": result.val, "steps": cfg["steps"] if model is not None else None, "best_step": result.best_step,
        "parameters": result.parameters, "train_seconds": result.train_seconds,
        "examples_per_second": result.examples_per_second, "wall_seconds": time.perf_counter() - start,
        "peak_memory_mib": result.peak_memory_mib, "device": str(resolve_device(cfg["device"])),
        "history": result.history, "options": {k: cfg[k] for k in ("lr", "d_hidden")},
    }
    if _run is not None:
        if result.state_dict:
            path = Path(f"/tmp/graphnfn-{_run._id or 'run'}-{cfg['model']}-{cfg['seed']}.pt")
            torch.save(result.state_dict, path)
            _run.add_artifact(str(path), f"best-{cfg['model']}-seed{cfg['seed']}.pt")
            path.unlink()
        for k, v in result.test.items():
            _run.log_scalar(f"test_{k}", v)
    return summary


def fit_align_linear(loaders: dict, task: Task) -> FitResult:
    """The align-linear baseline on weight-space loaders, reported like a trained model
    (regularisation chosen on val; no steps, no state)."""
    kind = {"classification": "classification", "regression": "regression"}.get(task.name)
    if kind is None:
        raise ValueError(f"align-linear has no {task.name} readout (it classifies or regresses)")
    start = time.perf_counter()
    baseline = AlignLinear(kind).fit(loaders["train"], loaders["val"])
    seconds = time.perf_counter() - start

    def score(batches) -> dict[str, float]:
        preds, ys = zip(*((baseline.predict(inputs), y) for inputs, y in map(split_batch, batches)))
        pred, y = torch.cat(preds), torch.cat(ys)
        return {**task.metrics(pred, y), "loss": task.loss(pred, y).item()}

    seen = sum(split_batch(b)[1].size(0) for b in loaders["train"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return FitResult(0, score(loaders["val"]), score(loaders["test"]), seconds, seen / max(seconds, 1e-9), peak,
                     baseline.num_parameters, [], {})
