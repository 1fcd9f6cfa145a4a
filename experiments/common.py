"""What every experiment shares: the model names, making (or reusing) the zoo, building a
model of either family by name, the loaders, and one training run.

The experiments are Sacred files (``python -m experiments.<task> with key=value``);
:func:`run_task` is also what :mod:`experiments.compare` calls for each model
and seed, so a comparison and a single run train in exactly the same way.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from graphnfn import registry
from graphnfn.paramshare.align import AlignLinear
from graphnfn.registry import family, learns
from graphnfn.trained import save_model, spec_record
from graphnfn.devices import resolve_device
from graphnfn.memory import process_peak_bytes
from graphnfn.checkpointing import load_loader_state, loader_state
from graphnfn.training import FitResult, Task, WeightScaler, fit, split_batch
from graphnfn.zoo import Zoo, ZooSource, graph_loader, open_zoo, weight_space_loader

from . import distributed
from .config import weight_augment

#: the config keys that shape a model (graphnfn.registry.build's options)
MODEL_KEYS = ("d_hidden", "n_layers", "heads", "fourier", "positional", "layer_embedding", "symmetry", "zero_output",
              "edit_scale", "pool", "recompute", "tensor_stats", "dropout", "edge_product")


def ensure_zoo(cfg: dict, kind: str, options: dict, make) -> ZooSource:
    """The zoo at cfg['zoo'] if given (ours or a published layout: :func:`graphnfn.zoo.open_zoo`;
    it must be a ``kind`` zoo); else the default zoo for ``kind`` and the
    maker ``options`` under zoos/ (one directory per distinct set of options),
    made by ``make(path)``: the makers resume, so a finished zoo is reused as it
    is and an interrupted one is completed. Experiments started together share it: the
    tasks' makers wait (``wait=True``) while another process writes it, then find it
    finished or complete it."""
    if cfg["zoo"] is not None:
        return open_zoo(cfg["zoo"], kind)
    digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    path = Path(cfg["zoo_root"]) / f"{kind}-{cfg['dataset']}-{digest}"
    # under torchrun rank 0 makes it (one writer per directory) while the others wait
    if distributed.rank() == 0:
        make(path)
    distributed.barrier()
    return Zoo(path)


def model_card(cfg: dict, sample, d_out: int, readout: str, probe_inputs: Tensor | None,
               scaler: WeightScaler | None, task: str, probe_act_param: float | None = None) -> dict[str, Any]:
    """What rebuilds cfg['model'] for inputs like ``sample`` (:func:`graphnfn.registry.build`) and
    feeds it new networks: saved with the trained weights, read by :func:`graphnfn.load_model`.
    With ``probe`` (``probe-mlp``: always) both families read ``probe_inputs``; a weight space does
    not record its activations' parameter, so the card keeps ``probe_act_param`` (SIREN's w0)."""
    probes = cfg["probe"] or cfg["model"] == registry.PROBE_MLP
    return {"name": cfg["model"], "d_out": d_out, "readout": readout, "options": {k: cfg[k] for k in MODEL_KEYS},
            "probe_inputs": probe_inputs if probes else None,
            "probe_act_param": probe_act_param if probes and family(cfg["model"]) != "graph" else None,
            "spec": spec_record(getattr(sample, "spec", None)) if family(cfg["model"]) != "graph" else None,
            "scales": scaler.scales if scaler else None, "task": task, "phase": cfg["phase"]}


def make_loaders(cfg: dict, zoo: Zoo, target, where=None,
                 scale: bool = True) -> tuple[dict[str, list], WeightScaler | None]:
    """Train/val/test batches of the model's family over the zoo records that
    satisfy ``where``, materialised once (conversion is not repeated every epoch;
    with ``augment`` the train split is re-drawn under its symmetries every epoch; with ``phase`` every
    split in :func:`graphnfn.zoo.augment.canonical_phase` form), and the scaler.
    ``cfg["workers"]`` DataLoader processes convert (and augment) the networks; their augmentation
    draws come from RNGs seeded off the loader's generator, so a pass replays exactly on resume.
    ``scale``: divide weights and biases by their train-set RMS (:class:`WeightScaler`).
    Under torchrun (:mod:`experiments.distributed`) a trained model's train batches are this
    process's part: a DistributedSampler's share of the split, ``batch_size / world_size`` per batch."""
    loader = graph_loader if family(cfg["model"]) == "graph" else weight_space_loader
    shared = distributed.launched() and learns(cfg["model"])  # the baselines that learn nothing fit alone, on all
    workers = {"num_workers": cfg.get("workers", 0)}
    out = {}
    for split in ("train", "val", "test"):
        indices = zoo.indices(split, where)[: cfg["limit"]]
        augment = weight_augment(cfg, cfg["model"]) if split == "train" else None
        if split == "train" and shared:
            sampler = DistributedSampler(indices, num_replicas=distributed.world_size(), rank=distributed.rank(),
                                         shuffle=True, seed=cfg["seed"])
            batches = loader(zoo, batch_size=cfg["batch_size"] // distributed.world_size(), sampler=sampler,
                             indices=indices, target=target, augment=augment, phase=cfg["phase"], **workers)
            out[split] = _Epochs(batches, sampler) if augment is not None else list(batches)
            continue
        batches = loader(zoo, batch_size=cfg["batch_size"], shuffle=split == "train", indices=indices, target=target,
                         augment=augment, phase=cfg["phase"], generator=torch.Generator().manual_seed(cfg["seed"]),
                         **workers)
        out[split] = batches if augment is not None else list(batches)
    if not scale:
        return out, None
    # inputs of unit scale, from the whole train split's statistics (summed over the processes' parts)
    scaler = WeightScaler(out["train"], distributed=shared and distributed.world_size() > 1)
    return {split: [scaler(b) for b in batches] if isinstance(batches, list) else _Mapped(batches, scaler)
            for split, batches in out.items()}, scaler


class _Epochs:
    """A loader over a DistributedSampler that tells it the pass number (a new shuffle every pass)."""

    def __init__(self, batches, sampler: DistributedSampler):
        self.batches, self.sampler, self.epoch = batches, sampler, 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class _Mapped:
    """An iterable that applies ``fn`` to every batch of ``batches``, anew each epoch."""

    def __init__(self, batches, fn):
        self.batches, self.fn = batches, fn

    def __iter__(self):
        return (self.fn(b) for b in self.batches)

    def __len__(self):
        return len(self.batches)

    # what decides the next pass is the wrapped loader's (a resumed fit redraws the pass from it)
    def state_dict(self):
        return loader_state(self.batches)

    def load_state_dict(self, state) -> None:
        load_loader_state(self.batches, state)


def run_task(cfg: dict, task: Task, loaders: dict, model: nn.Module | None, _run=None,
             card: dict[str, Any] | None = None, checkpoint: Path | None = None) -> dict[str, Any]:
    """Train ``model`` for the step budget (or, when ``model`` is None, fit the baseline
    cfg['model'] that learns nothing: :func:`fit_reference`); log every evaluation to the
    Sacred run, save the best checkpoint with its ``card`` (:func:`model_card`) as an
    artifact, return the summary the tables are made from.
    ``checkpoint``: fit's training-state file (:mod:`experiments.resume`), continued if it exists."""
    torch.manual_seed(cfg["seed"])
    start = time.perf_counter()
    if model is None:
        result = fit_reference(cfg["model"], loaders, task)
        encoding = REFERENCE_ENCODINGS[cfg["model"]]
    else:
        log = _run.log_scalar if _run is not None else None
        result = fit(model, loaders["train"], loaders["val"], loaders["test"], task, steps=cfg["steps"],
                     eval_every=cfg["eval_every"], lr=cfg["lr"], weight_decay=cfg["weight_decay"], warmup=cfg["warmup"],
                     device=cfg["device"], amp=cfg["amp"], log=log, progress=distributed.rank() == 0,
                     distributed=distributed.world_size() > 1, checkpoint=checkpoint)
        encoding = model.encoding
    if cfg["phase"]:
        encoding += ", phase-canonical INRs"
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
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"best-{cfg['model']}-seed{cfg['seed']}.pt"
                save_model(path, card or {}, result.state_dict)
                _run.add_artifact(str(path), path.name)
        for k, v in result.test.items():
            _run.log_scalar(f"test_{k}", v)
    return summary


#: what each baseline that learns nothing reads
REFERENCE_ENCODINGS = {"align-linear": "raw (aligned)", "no-edit": "the INR's own image",
                       "mean-target": "no input: the train split's mean target",
                       "refit-output": "raw: the output layer refit to the edit of the INR's own image"}


def fit_reference(name: str, loaders: dict, task: Task) -> FitResult:
    """A baseline that learns nothing (``registry.learns``), on weight-space loaders, reported
    like a trained model (no steps, no state): ``align-linear`` (neuron matching + a linear
    model, its regularisation chosen on val), ``no-edit`` (the task's ``identity``: each INR's
    own image), ``mean-target`` (the train split's mean target for every input) or ``refit-output``
    (the task's ``solver``: editing's output layer refit by least squares)."""
    start = time.perf_counter()
    if name == "align-linear":
        kind = {"classification": "classification", "regression": "regression"}.get(task.name)
        if kind is None:
            raise ValueError(f"align-linear has no {task.name} readout (it classifies or regresses)")
        baseline = AlignLinear(kind).fit(loaders["train"], loaders["val"])
        predict, parameters = baseline.predict, baseline.num_parameters
    elif name == "no-edit":
        if task.identity is None:
            raise ValueError(f"no-edit: the {task.name} task has no identity prediction (editing has)")
        predict, parameters = task.identity, 0
    elif name == "refit-output":
        if task.solver is None:
            raise ValueError(f"refit-output: the {task.name} task has no solver (editing has)")
        predict, parameters = task.solver, 0
    elif name == "mean-target":
        ys = torch.cat([split_batch(b)[1] for b in loaders["train"]]).double()
        mean = ys.mean(0)
        predict, parameters = (lambda inputs: mean.expand(inputs.batch_size, *mean.shape)), mean.numel()
    else:
        raise ValueError(f"{name} is not a baseline that learns nothing")
    seconds = time.perf_counter() - start

    def score(batches) -> dict[str, float]:
        preds, ys = zip(*((predict(inputs), y) for inputs, y in map(split_batch, batches)))
        pred, y = torch.cat(preds), torch.cat(ys)
        return {**task.metrics(pred, y), "loss": task.loss(pred, y).item()}

    seen = sum(split_batch(b)[1].size(0) for b in loaders["train"])
    peak = process_peak_bytes(torch.device("cpu")) / 2**20
    return FitResult(0, score(loaders["val"]), score(loaders["test"]), seconds, seen / max(seconds, 1e-9), peak,
                     parameters, [], {})
