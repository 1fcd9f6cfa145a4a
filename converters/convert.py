"""The public entry points: any supported input -> NeuralGraph or WeightSpace."""
from __future__ import annotations

import os
from typing import Mapping, Union

import torch
from torch import Tensor, nn

from graphnfn.graph import NeuralGraph, NodeType
from graphnfn.paramshare import WeightSpace

from .build import build_graph
from .errors import ConversionError
from .load import load_checkpoint
from .ops import Op, ParamLayer, module_ops, state_dict_ops

Convertible = Union[nn.Module, Mapping[str, Tensor], str, os.PathLike]


def _ops(obj: Convertible) -> tuple[list[Op], list[str]]:
    if isinstance(obj, nn.Module):
        return module_ops(obj), list(obj.state_dict().keys())
    if isinstance(obj, Mapping):
        return state_dict_ops(obj), list(obj.keys())
    raise TypeError(f"cannot convert a {type(obj).__name__}: pass an nn.Module, a state_dict or a checkpoint path")


def _with_source(obj: Convertible, fn):
    """Run ``fn(resolved obj)``, naming the file in any conversion error."""
    if not isinstance(obj, (str, os.PathLike)):
        return fn(obj)
    state_dict = load_checkpoint(obj)
    try:
        return fn(state_dict)
    except ConversionError as err:
        raise type(err)(f"{os.fspath(obj)}: {err}") from err


def to_graph(obj: Convertible, allow_nonfinite: bool = False) -> NeuralGraph:
    """The neuron graph of a network.

    Args:
        obj: an ``nn.Module`` (Sequential at any depth, or any chain torch.fx can
            trace), a state_dict of an MLP, or a path to a ``.pt``/``.pth``/
            ``.safetensors`` checkpoint holding one.
        allow_nonfinite: accept NaN/Inf weights instead of raising.
    Returns:
        a :class:`graphnfn.NeuralGraph` that :func:`converters.from_graph` folds
        back into the same state_dict, bit for bit.
    """
    return _with_source(obj, lambda o: build_graph(*_ops(o), allow_nonfinite=allow_nonfinite))


def to_weight_space(obj: Convertible, allow_nonfinite: bool = False) -> WeightSpace:
    """The network as a :class:`WeightSpace` with batch and channel dims of 1:
    weights [1, 1, n_out, n_in(, kernel dims)], biases [1, 1, n_out] (zeros for
    layers without bias), in the graph's dtype. Only chains of Linear/Conv
    layers (global pooling allowed) have this form."""

    def convert(o: Convertible) -> WeightSpace:
        ops, keys = _ops(o)
        g = build_graph(ops, keys, allow_nonfinite=allow_nonfinite)  # validates the wiring
        for node_type, why in ((NodeType.NORM, "BatchNorm layers"), (NodeType.FLATTEN, "a Flatten of spatial positions")):
            if bool((g.node_type == node_type).any()):
                raise ConversionError(f"{why} cannot be expressed in a WeightSpace (a chain of Linear/Conv layers); use to_graph")
        layers = [op for op in ops if isinstance(op, ParamLayer)]
        weights = tuple(layer.weight.to(g.x.dtype)[None, None] for layer in layers)
        biases = tuple(
            (layer.tensors["bias"][1].to(g.x.dtype) if "bias" in layer.tensors
             else torch.zeros(layer.weight.size(0), dtype=g.x.dtype, device=g.x.device))[None, None]
            for layer in layers)
        return WeightSpace(weights, biases)

    return _with_source(obj, convert)
