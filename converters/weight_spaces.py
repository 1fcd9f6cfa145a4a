"""Programs -> the tensor formats of the parameter-sharing layers.

:func:`chain_weight_space`: a chain of Linear/Conv layers as a
:class:`WeightSpace` (NFN). :func:`attention_weight_space`: the transformer
blocks as an :class:`AttentionWeightSpace` (Transformer-NFN), row-vector
convention: W_q[i] [D, d_k] is the transpose of head i's rows of the query
projection, W_o[i] [d_v, D] the transpose of head i's columns of the output
projection, the MLP W_a [D, D_a] the transpose of the first Linear's weight.
"""
from __future__ import annotations

import torch
from torch import Tensor

from graphnfn.graph import Activation, EdgeType, NeuralGraph, NodeType
from graphnfn.spaces import AttentionWeightSpace, WeightSpace

from . import ir
from .errors import ConversionError

_OUTSIDE = {NodeType.NORM: "BatchNorm layers", NodeType.FLATTEN: "a Flatten of spatial positions",
            NodeType.LAYER_NORM: "LayerNorm layers", NodeType.RESIDUAL: "residual connections",
            NodeType.QUERY: "attention layers", NodeType.POSITION: "positional embeddings",
            NodeType.CLASS_TOKEN: "class tokens"}


def hidden_activations(prog: ir.Program) -> tuple[str, ...] | None:
    """What each hidden neuron layer of a chain applies between two Linear/Conv layers (the
    :attr:`WeightSpaceSpec.activations` record), or None when the program does not know
    (a state_dict: :attr:`Activation.UNKNOWN`).

    Everything between the two layers that can break a symmetry is recorded, in order and
    joined by "+": activations by name, max pooling as "max_pool" (it commutes with positive
    scalings but is not odd, so "tanh+max_pool" has no sign symmetry), and any other
    operation by its type. Average pooling, Flatten and means are linear and act per
    channel (they commute with every permutation, sign flip and positive scaling), so
    they are left out; a layer with nothing else is "identity"."""
    records: list[str] = []
    maps: list[str] | None = None  # what the current hidden layer applies; None before the first layer
    for op in prog.ops:
        if isinstance(op, ir.Layer):
            if maps is not None:
                records.append("+".join(maps) or "identity")
            maps = []
        elif maps is None or isinstance(op, (ir.Flatten, ir.Mean)) or (isinstance(op, ir.Pool) and op.kind == "avg"):
            continue
        elif isinstance(op, ir.Act):
            if op.kind is Activation.UNKNOWN:
                return None
            if op.kind is not Activation.IDENTITY:
                maps.append(op.kind.name.lower())
        else:
            maps.append("max_pool" if isinstance(op, ir.Pool) else type(op).__name__.lower())
    return tuple(records)  # what follows the last layer acts on the outputs, which no group moves


def chain_weight_space(prog: ir.Program, g: NeuralGraph) -> WeightSpace:
    """weights[l] [1, 1, n_out, n_in(, kernel dims)], biases[l] [1, 1, n_out]
    (zeros for layers without bias), in the graph's dtype; ``activations`` from
    :func:`hidden_activations`."""
    for node_type, why in _OUTSIDE.items():
        if bool((g.node_type == node_type).any()):
            raise ConversionError(f"{why} cannot be expressed in a WeightSpace (a chain of Linear/Conv layers); use to_graph")
    if bool((g.edge_type == EdgeType.EMBED).any()):
        raise ConversionError("token embeddings cannot be expressed in a WeightSpace; use to_graph")
    if not prog.is_chain():
        raise ConversionError("a network with branches or concatenations cannot be expressed in a WeightSpace "
                              "(a chain of Linear/Conv layers); use to_graph")
    layers = [op for op in prog.ops if isinstance(op, ir.Layer)]
    for layer in layers:
        if layer.geometry.get("groups", 1) != 1:
            raise ConversionError(f"{layer.tensors['weight'][0]}: a grouped convolution (groups="
                                  f"{layer.geometry['groups']}) cannot be expressed in a WeightSpace (dense "
                                  "Linear/Conv layers); use to_graph")
    weights = tuple(layer.weight.to(g.x.dtype)[None, None] for layer in layers)
    biases = tuple(
        (layer.tensors["bias"][1].to(g.x.dtype) if "bias" in layer.tensors
         else torch.zeros(layer.weight.size(0), dtype=g.x.dtype, device=g.x.device))[None, None]
        for layer in layers)
    return WeightSpace(weights, biases, hidden_activations(prog))


def _rows(p: ir.Proj) -> Tensor:
    return p.weight[1][p.row0:p.row0 + p.n]


def _mlp_after(prog: ir.Program, start: int, end: int, d: int, where: str) -> tuple[ir.Layer, ir.Layer]:
    """The first two Linear layers in ops[start:end], the second reading the
    first through an activation, shaped D -> D_a -> D."""
    producer = {op.out: op for op in prog.ops}
    linears = [op for op in prog.ops[start:end] if isinstance(op, ir.Layer) and op.kind == "linear"]
    if len(linears) >= 2:
        first, second = linears[:2]
        act = producer.get(second.args[0])
        if isinstance(act, ir.Act) and act.args == (first.out,) and first.weight.size(1) == d \
                and second.weight.shape == (d, first.weight.size(0)):
            return first, second
    raise ConversionError(f"{where}: no MLP block (Linear {d} -> D_a, activation, Linear D_a -> {d}) follows it")


def attention_weight_space(prog: ir.Program, dtype: torch.dtype) -> AttentionWeightSpace:
    """Per block: each attention layer and the MLP that follows it."""
    where = [i for i, op in enumerate(prog.ops) if isinstance(op, ir.Attention)]
    if not where:
        raise ConversionError("the network has no attention layer; use to_weight_space or to_graph")
    fields: list[list[Tensor]] = [[] for _ in AttentionWeightSpace._fields]
    for n, i in enumerate(where):
        a: ir.Attention = prog.ops[i]
        d, h = a.o.n, a.heads
        if any(p.weight[1].size(1) != d for p in (a.q, a.k, a.v)):
            raise ConversionError(f"{a.label}: q, k and v must read the {d}-wide residual stream (self-attention)")
        first, second = _mlp_after(prog, i + 1, where[n + 1] if n + 1 < len(where) else len(prog.ops), d, a.label)
        hidden = first.weight.size(0)
        block = (
            _rows(a.q).view(h, -1, d).transpose(1, 2), _rows(a.k).view(h, -1, d).transpose(1, 2),
            _rows(a.v).view(h, -1, d).transpose(1, 2), a.o.weight[1].T.reshape(h, -1, d),
            first.weight.T, first.tensors["bias"][1] if "bias" in first.tensors else first.weight.new_zeros(hidden),
            second.weight.T, second.tensors["bias"][1] if "bias" in second.tensors else second.weight.new_zeros(d),
        )
        for field, t in zip(fields, block):
            field.append(t.to(dtype)[None, None].contiguous())
    return AttentionWeightSpace(*(tuple(f) for f in fields))
