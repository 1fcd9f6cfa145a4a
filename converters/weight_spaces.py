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

from .program import Act, Attention, Flatten, Layer, Mean, Mul, Pool, Program
from .errors import ConversionError

_OUTSIDE = {NodeType.NORM: "BatchNorm layers", NodeType.FLATTEN: "a Flatten of spatial positions",
            NodeType.LAYER_NORM: "LayerNorm layers", NodeType.RESIDUAL: "residual connections",
            NodeType.QUERY: "attention layers", NodeType.POSITION: "positional embeddings",
            NodeType.CLASS_TOKEN: "class tokens"}


def hidden_activations(prog: Program) -> tuple[str, ...] | None:
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
        if isinstance(op, Layer):
            if maps is not None:
                records.append("+".join(maps) or "identity")
            maps = []
        elif maps is None or isinstance(op, (Flatten, Mean)) or (isinstance(op, Pool) and op.kind == "avg"):
            continue
        elif isinstance(op, Act):
            if op.kind is Activation.UNKNOWN:
                return None
            if op.kind is not Activation.IDENTITY:
                maps.append(op.kind.name.lower())
        else:
            maps.append("max_pool" if isinstance(op, Pool) else type(op).__name__.lower())
    return tuple(records)  # what follows the last layer acts on the outputs, which no group moves


def chain_weight_space(prog: Program, g: NeuralGraph) -> WeightSpace:
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
    layers = [op for op in prog.ops if isinstance(op, Layer)]
    for layer in layers:
        if layer.geometry.get("groups", 1) != 1:
            raise ConversionError(f"{layer.tensors['weight'][0]}: a grouped convolution (groups="
                                  f"{layer.geometry['groups']}) cannot be expressed in a WeightSpace (dense "
                                  "Linear/Conv layers); use to_graph")
    weights = tuple(layer.matrix.to(g.x.dtype)[None, None] for layer in layers)
    biases = tuple(
        (layer.tensors["bias"][1].to(g.x.dtype) if "bias" in layer.tensors
         else torch.zeros(layer.weight.size(0), dtype=g.x.dtype, device=g.x.device))[None, None]
        for layer in layers)
    return WeightSpace(weights, biases, hidden_activations(prog))


def _mlp_after(prog: Program, start: int, end: int, d: int) -> tuple[Layer, Layer] | str:
    """The first two Linear layers in ops[start:end], the second reading the
    first through an activation, shaped D -> D_a -> D; else why there is none."""
    producer = {op.out: op for op in prog.ops}
    ops = prog.ops[start:end]
    linears = [op for op in ops if isinstance(op, Layer) and op.kind == "linear"]
    if len(linears) >= 2:
        first, second = linears[:2]
        act = producer.get(second.args[0])
        if isinstance(act, Act) and act.args == (first.out,) and first.matrix.size(1) == d \
                and second.matrix.shape == (d, first.matrix.size(0)):
            return first, second
    gated = " (a gated MLP such as SwiGLU, act(gate) * up, has three weights)" if any(
        isinstance(op, Mul) for op in ops) else ""
    return f"no MLP block (Linear {d} -> D_a, activation, Linear D_a -> {d}) follows it{gated}"


def attention_weight_space(prog: Program, dtype: torch.dtype) -> AttentionWeightSpace:
    """Per block: each attention layer and the MLP that follows it. A block the
    format cannot hold is an error naming everything it lacks room for."""
    where = [i for i, op in enumerate(prog.ops) if isinstance(op, Attention)]
    if not where:
        raise ConversionError("the network has no attention layer; use to_weight_space or to_graph")
    fields: list[list[Tensor]] = [[] for _ in AttentionWeightSpace._fields]
    for n, i in enumerate(where):
        a: Attention = prog.ops[i]
        d, h = a.o.n, a.heads
        mlp = _mlp_after(prog, i + 1, where[n + 1] if n + 1 < len(where) else len(prog.ops), d)
        missing = [why for lacks, why in (
            (a.rotary is not None, "rotary position embeddings (q and k turned by token position)"),
            (a.groups != h, f"grouped-query attention ({a.groups} key/value heads for {h} query heads; the format "
                            "has a key and a value per query head)"),
            (any(p.inputs != d for p in (a.q, a.k, a.v)), f"q, k and v must read the {d}-wide residual stream "
                                                          "(self-attention)"),
            (isinstance(mlp, str), mlp)) if lacks]
        if missing:
            raise ConversionError(f"{a.label}: not in the Transformer-NFN format: {'; '.join(missing)}; use to_graph")
        first, second = mlp
        hidden = first.matrix.size(0)
        block = (
            a.q.matrix().reshape(h, -1, d).transpose(1, 2), a.k.matrix().reshape(h, -1, d).transpose(1, 2),
            a.v.matrix().reshape(h, -1, d).transpose(1, 2), a.o.matrix().T.reshape(h, -1, d),
            first.matrix.T, first.tensors["bias"][1] if "bias" in first.tensors else first.weight.new_zeros(hidden),
            second.matrix.T, second.tensors["bias"][1] if "bias" in second.tensors else second.weight.new_zeros(d),
        )
        for field, t in zip(fields, block):
            field.append(t.to(dtype)[None, None].contiguous())
    return AttentionWeightSpace(*(tuple(f) for f in fields))
