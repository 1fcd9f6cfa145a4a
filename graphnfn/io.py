"""Saving and loading NeuralGraphs as safetensors files (no pickle: safe to load).

Every tensor field of the graph is a tensor of the file; the fold-back spec is
JSON in the file's metadata (tensors inside the spec, such as constant buffers,
are stored as tensors too).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from .graph import GraphSpec, NeuralGraph, ParamEntry

_SPEC_KEY = "graphnfn_spec"


def _encode(value: Any, tensors: dict[str, Tensor], name: str) -> Any:
    if isinstance(value, Tensor):
        tensors[name] = value.detach().contiguous()
        return {"__tensor__": name}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name), tensors, f"{name}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, tensors, f"{name}.{i}") for i, v in enumerate(value)]
    return value


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict) and "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    if isinstance(value, list):
        return tuple(_decode(v, tensors) for v in value)
    return value


def save_graph(g: NeuralGraph, path: str | os.PathLike) -> None:
    """Write ``g`` to ``path`` (a .safetensors file)."""
    tensors: dict[str, Tensor] = {}
    for key, value in g:
        if isinstance(value, Tensor):
            tensors[key] = value.detach().contiguous()
    spec = _encode(g.spec, tensors, "spec")
    save_file(tensors, os.fspath(path), metadata={_SPEC_KEY: json.dumps(spec)})


def load_graph(path: str | os.PathLike) -> NeuralGraph:
    """Read a graph written by :func:`save_graph`."""
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file: {err}") from err
    if _SPEC_KEY not in metadata:
        raise ValueError(f"{path}: not a graphnfn graph file (no {_SPEC_KEY} metadata)")
    raw = json.loads(metadata[_SPEC_KEY])
    entries = tuple(ParamEntry(**{k: _decode(v, tensors) for k, v in e.items()}) for e in raw.pop("entries"))
    spec = GraphSpec(entries=entries, **{k: _decode(v, tensors) for k, v in raw.items()})
    fields = {k: v for k, v in tensors.items() if not k.startswith("spec.")}
    return NeuralGraph(**fields, spec=spec, num_nodes=fields["x"].size(0))
