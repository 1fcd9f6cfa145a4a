"""Trained weight-space models as artifacts: saved with everything needed to use them again
(the model's name and options, its input spec, the input scaling it was trained with), and
loaded back to predict on new networks.

    model = graphnfn.load_model("runs/7")                # the run's best checkpoint
    model.predict([net_a, "other.pt", state_dict])       # [B, d_out] (invariant readout)

A checkpoint is a dict of tensors, numbers, strings and tuples (``torch.load(...,
weights_only=True)`` reads it): ``name``, ``d_out``, ``readout``, ``options`` (the
:func:`graphnfn.registry.build` keywords), ``probe_inputs``, ``probe_act_param`` (the
activations' parameter a parameter-sharing model's probe runs use), ``spec`` (a parameter-sharing
model's input spec), ``scales`` (:class:`graphnfn.training.WeightScaler`; None: raw
inputs), ``task``, ``phase`` (trained on sine networks in
:func:`graphnfn.zoo.augment.canonical_phase` form, which new networks are put in too) and ``state_dict``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

import converters

from . import registry
from .graph import NeuralGraph, collate
from .spaces import AttentionSpec, AttentionWeightSpace, WeightSpace, WeightSpaceSpec, concat
from .training import WeightScaler
from .zoo.augment import canonical_phase

FORMAT = "graphnfn-model/1"
_SPECS = {"WeightSpaceSpec": WeightSpaceSpec, "AttentionSpec": AttentionSpec}


def spec_record(spec) -> dict | None:
    """A weight-space spec as plain tuples (None for graph models' inputs)."""
    if not isinstance(spec, tuple(_SPECS.values())):
        return None
    return {"type": type(spec).__name__, **spec._asdict()}


def build_from_card(card: dict[str, Any], sample) -> nn.Module:
    """The untrained model a card describes (:func:`graphnfn.registry.build` of its name, d_out,
    readout, options and probe settings) for inputs like ``sample``."""
    return registry.build(card["name"], sample, card["d_out"], card["readout"], probe_inputs=card["probe_inputs"],
                          probe_act_param=card.get("probe_act_param"), input_scales=card["scales"],
                          **card["options"])


def save_model(path: str | os.PathLike, card: dict[str, Any], state_dict: dict[str, Tensor]) -> None:
    """Write a checkpoint: ``card`` (name, d_out, readout, options, probe_inputs, spec, scales,
    task) and the model's ``state_dict``."""
    torch.save({"format": FORMAT, **card, "state_dict": state_dict}, path)


class TrainedModel:
    """A trained model with its input pipeline: networks in, predictions out.

    Attributes: ``module`` (the nn.Module, in eval mode), ``name``, ``readout``,
    ``task``, ``family`` ("graph" or "paramshare").
    """

    def __init__(self, checkpoint: dict[str, Any], where: str):
        if checkpoint.get("format") != FORMAT:
            raise ValueError(f"{where}: not a graphnfn model checkpoint (format {checkpoint.get('format')!r})")
        self.name, self.readout, self.task = checkpoint["name"], checkpoint["readout"], checkpoint["task"]
        self.family = registry.family(self.name)
        record = checkpoint["spec"]
        self.spec = _SPECS[record["type"]](**{k: v for k, v in record.items() if k != "type"}) if record else None
        self.scaler = WeightScaler.from_scales(checkpoint["scales"]) if checkpoint["scales"] is not None else None
        self.phase = bool(checkpoint.get("phase", False))
        sample = None if self.spec is None else _Sample(self.spec)
        self.module = build_from_card(checkpoint, sample)
        self.module.load_state_dict(checkpoint["state_dict"])
        self.module.eval()

    def inputs(self, networks: Sequence) -> NeuralGraph | WeightSpace | AttentionWeightSpace:
        """``networks`` (nn.Modules, state_dicts, checkpoint paths, or NeuralGraphs) as one batch
        of this model's input type, scaled as in training."""
        if self.phase:
            networks = [_phase_canonical(n, self.name) for n in networks]
        if self.family == "graph":
            batch = collate([n if isinstance(n, NeuralGraph) else converters.to_graph(n) for n in networks])
            batch.y = torch.zeros(batch.num_graphs)
            return self.scaler(batch) if self.scaler else batch
        convert = (converters.to_attention_weight_space if isinstance(self.spec, AttentionSpec)
                   else converters.to_weight_space)
        spaces = [convert(n) for n in networks]
        if isinstance(self.spec, AttentionSpec):
            space = type(spaces[0])(*(tuple(torch.cat(blocks, 0) for blocks in zip(*field)) for field in zip(*spaces)))
        else:
            space = concat(spaces, 0)
        return self.scaler((space, torch.zeros(len(spaces))))[0] if self.scaler else space

    @torch.no_grad()
    def predict(self, networks: Sequence) -> Tensor | Any:
        """The model's outputs for ``networks``: [B, d_out] for an invariant readout (logits for
        a classifier, the predicted value for a regressor); an equivariant readout's output
        otherwise."""
        return self.module(self.inputs(networks))


def _phase_canonical(network, name: str) -> nn.Module:
    """A copy of the nn.Module ``network`` in :func:`canonical_phase` form; ValueError for other
    inputs, whose activations (and so their sine neurons) a state_dict does not tell."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"{name} was trained on phase-canonical sine networks (phase=True): pass each network as "
                         f"an nn.Module so its sine neurons can be found, not a {type(network).__name__}")
    out = copy.deepcopy(network)
    out.load_state_dict(canonical_phase(network, network.state_dict()))
    return out


class _Sample:
    """What :func:`graphnfn.registry.build` reads of a weight-space sample: its spec."""

    def __init__(self, spec):
        self.spec = spec


def load_model(path: str | os.PathLike, model: str | None = None, seed: int | None = None) -> TrainedModel:
    """A trained model from a checkpoint file, or from a run directory (``best-<model>-seed<seed>.pt``;
    pass ``model`` / ``seed`` when the directory holds several)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(path.glob(f"best-{model or '*'}-seed{'*' if seed is None else seed}.pt"))
        if len(found) != 1:
            names = sorted(p.name for p in path.glob("best-*.pt"))
            raise FileNotFoundError(f"{path}: {'no' if not found else 'several'} checkpoints match "
                                    f"(model={model!r}, seed={seed!r}); there are {names or 'none'}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint or run directory")
    return TrainedModel(torch.load(path, map_location="cpu", weights_only=True), str(path))


__all__ = ["TrainedModel", "build_from_card", "load_model", "save_model", "spec_record"]
