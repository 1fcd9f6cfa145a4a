"""Wiring a :class:`~converters.program.Program` into a NeuralGraph (the
graph's nodes and edges are grown by :class:`~converters.graph_builder.GraphBuilder`).

Each value of the program is held by graph nodes (a :class:`ValueNodes`: the
ids of the nodes holding its features, in feature order, and its layout). Layers add
a block of nodes and the edges into it; activations and pooling annotate the
nodes they follow; residual sums add a block of ``RESIDUAL`` nodes with
identity edges from both operands, and products (a gated MLP) ``PRODUCT``
nodes; a feature concatenation joins the id lists (no nodes); attention adds query, key, head, value and output nodes
(:mod:`converters.wire_attention`). An input gets its nodes when a layer first
reads it, sized by that layer.

Each value has a :class:`ValueLayout`. A network input is read as a token
sequence when an operation that needs tokens (attention, a class token or
positional parameter, ``x[:, k]``, a mean over dim 1) depends on it, else as
features (or as a feature map by a conv).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable, Sequence

import torch
from torch import Tensor

from graphnfn.graph import EdgeType, NeuralGraph, NodeType

from .program import (Act, Add, Attention, Cat, Flatten, Input, Layer, Mean, Mul, Op, Param, Pool, Positions,
                      Program, SelectToken, ToTokens, tag)
from .errors import ConversionError, NonFiniteWeightError
from .graph_builder import LINEAR_META, GraphBuilder, NodeGroup, row_major, transposed
from .wire_attention import wire_attention


class ValueLayout(StrEnum):
    """Where a value's features sit in its tensor (its value names it in errors)."""

    FEATURES = "features"  # [B, F]
    FEATURE_MAP = "feature map"  # [B, C, *spatial]: the features (channels) at dim 1
    TOKENS = "token sequence"  # [B, T, D]: the features last
    FLATTENED_MAP = "flattened feature map"  # for a Linear whose in_features tell its spatial positions
    TOKEN_IDS = "token ids"  # for an nn.Embedding


@dataclass
class ValueNodes:
    """A tensor of the forward pass as graph nodes: ``ids`` of the nodes holding
    its features (in feature order), its layout, and the nodes' versions when
    it was made (an activation or pooling applied later changes them in place)."""

    ids: Tensor
    layout: ValueLayout
    version: Tensor
    sdims: int = 0  # spatial dims of a map (0 for an input map until a conv reads it)
    positions: int | None = None  # spatial positions per channel, where pooling made them known
    flat_nodes: dict = field(default_factory=dict)  # flattened map: positions -> flatten node ids
    flat_name: str = ""  # flattened map: the Flatten that made it (names the flatten nodes)


#: the layouts whose values add elementwise and concatenate along their features
SUMMABLE = (ValueLayout.FEATURES, ValueLayout.FEATURE_MAP, ValueLayout.TOKENS)


@dataclass
class PendingInput:
    """A network input no operation has read yet (its nodes are made, sized, by the first reader)."""

    name: str
    tokens: bool
    flattened: bool = False  # flattened before its first reader: its features are flat
    nodes: ValueNodes | None = None


POSITIONS = "positions"  # the value of torch.arange


def _patch_embeddings(prog: Program) -> set[int]:
    """Convs that cut a network input into patches (stride = kernel, no padding)
    for a token sequence (their output flattened and transposed to tokens)."""
    readers: dict[int, list[Op]] = defaultdict(list)
    for op in prog.ops:
        for a in op.args:
            readers[a].append(op)
    inputs = {op.out for op in prog.ops if isinstance(op, Input)}

    def to_tokens(value: int) -> bool:
        ops = readers[value]
        return bool(ops) and all(isinstance(r, ToTokens) or (isinstance(r, Flatten) and r.start_dim == 2
                                                                and to_tokens(r.out)) for r in ops)

    return {op.out for op in prog.ops if isinstance(op, Layer) and op.kind == "conv" and op.geometry["patches"]
            and op.args[0] in inputs and to_tokens(op.out)}


def _token_inputs(prog: Program) -> set[int]:
    """Inputs an operation that needs a token sequence depends on."""
    reach: dict[int, frozenset[int]] = {}
    tokens: set[int] = set()
    params_out = {op.out for op in prog.ops if isinstance(op, Param)}
    for op in prog.ops:
        reach[op.out] = frozenset({op.out}) if isinstance(op, Input) else frozenset().union(
            *(reach.get(a, frozenset()) for a in op.args))
        params = not params_out.isdisjoint(op.args)
        if isinstance(op, (Attention, SelectToken)) or (isinstance(op, (Add, Cat)) and params) or (
                isinstance(op, Mean) and set(op.dims) <= {1, -2}):
            tokens |= reach[op.out]
    return tokens


class _Wiring:
    """The value -> nodes state while the program's operations are wired."""

    def __init__(self, b: GraphBuilder, prog: Program, patch_embeddings: set[int]):
        self.b = b
        self.values: dict[int, object] = {}
        self.token_inputs = _token_inputs(prog)
        self.patch_embeddings = patch_embeddings

    # -- reading values ------------------------------------------------------------
    def argument(self, op: Op, i: int, n: int | None = None, layout: ValueLayout | None = None) -> ValueNodes:
        """Argument i as nodes; an unread input gets n nodes in ``layout``
        (when not given: a token sequence or features, as the program needs)."""
        v = self.values[op.args[i]]
        if isinstance(v, PendingInput):
            if v.nodes is None:
                if n is None:
                    raise ConversionError(f"{op.label}: cannot tell the size of input {v.name!r} from this operation")
                read_as = ValueLayout.TOKENS if v.tokens else ValueLayout.FEATURES
                layout = ValueLayout.FEATURES if v.flattened else layout or read_as
                block = self.b.add_nodes(v.name, n, NodeType.INPUT, position=torch.arange(n))
                v.nodes = ValueNodes(block.ids, layout, self.b.versions(block.ids))
            v = v.nodes
        if v is POSITIONS or isinstance(v, Param):
            raise ConversionError(f"{op.label}: reads {'torch.arange positions' if v is POSITIONS else 'a parameter'} "
                                  "where a tensor of the network is expected")
        if not torch.equal(self.b.versions(v.ids), v.version):
            raise ConversionError(f"{op.label}: reads a value that a later activation or pooling changed in place "
                                  "(the graph holds one value per neuron)")
        op.require(v.layout != ValueLayout.TOKEN_IDS or isinstance(op, Layer) and op.kind == "embedding",
                   "token ids can only be read by an nn.Embedding")
        return v

    def changed(self, x: ValueNodes, **fields) -> ValueNodes:
        return replace(x, version=self.b.bump(x.ids), flat_nodes={}, **fields)

    # -- operations: WIRE_OP and WIRE_LAYER below say which method wires which op ----------
    def run(self, op: Op) -> object:
        return WIRE_OP[type(op)](self, op)

    def input(self, op: Input) -> PendingInput:
        return PendingInput(op.name, op.out in self.token_inputs)

    def param(self, op: Param) -> Param:
        return op  # wired by the op that reads it (a positional embedding, class tokens)

    def positions(self, op: Positions) -> str:
        return POSITIONS

    def layer(self, op: Layer) -> ValueNodes:
        return WIRE_LAYER[op.kind](self, op)

    def attention(self, op: Attention) -> ValueNodes:
        xs = []
        for i, p in enumerate((op.q, op.k, op.v)):
            key, w = p.weight
            x = self.argument(op, i, p.inputs)
            op.require(x.layout == ValueLayout.TOKENS, f"attention needs a token sequence, got a {x.layout} value")
            op.require(x.ids.numel() == p.inputs, f"{key!r} of shape {tuple(w.shape)} expects {p.inputs} inputs, "
                                                  f"the previous layer has {x.ids.numel()} outputs")
            xs.append(x.ids)
        ids = wire_attention(self.b, op, *xs)
        return ValueNodes(ids, ValueLayout.TOKENS, self.b.versions(ids))

    def linear(self, op: Layer) -> ValueNodes:
        w = op.matrix
        n_in = w.size(1)
        x = self.argument(op, 0, n_in)
        if x.layout == ValueLayout.FLATTENED_MAP:
            x = self._unflatten(op, x, n_in)
        op.require(x.layout in (ValueLayout.FEATURES, ValueLayout.TOKENS),
                   "Linear applied to a conv feature map without Flatten")
        op.require(x.ids.numel() == n_in,
                   f"weight {tuple(w.shape)} expects {n_in} inputs, the previous layer has {x.ids.numel()} outputs")
        return self._out(self._dense(op, x, EdgeType.LINEAR, 1, **LINEAR_META), x)

    def conv(self, op: Layer) -> ValueNodes:
        w = op.weight
        if op.out in self.patch_embeddings:
            return self._patch_embedding(op)
        g = op.geometry
        n_in = w.size(1) * g["groups"]
        x = self.argument(op, 0, n_in, ValueLayout.FEATURE_MAP)
        op.require(x.layout == ValueLayout.FEATURE_MAP, "a convolution needs a feature map; the previous layer is flat")
        op.require(x.ids.numel() == n_in, f"weight {tuple(w.shape)} with groups={g['groups']} expects {n_in} input "
                                          f"channels, previous layer has {x.ids.numel()}")
        x.sdims = x.sdims or w.dim() - 2  # an input map learns its spatial dims here
        kh, kw = (1, w.size(2)) if w.dim() == 3 else (w.size(2), w.size(3))
        block = self._dense(op, x, EdgeType.CONV, kh * kw, g["groups"], kernel_h=kh, kernel_w=kw,
                            stride_h=g["stride"][0], stride_w=g["stride"][1], padding_h=g["padding"][0],
                            padding_w=g["padding"][1], dilation_h=g["dilation"][0], dilation_w=g["dilation"][1],
                            padding_mode=g["padding_mode"])
        return replace(self._out(block, x), sdims=w.dim() - 2, positions=None)

    def _patch_embedding(self, op: Layer) -> ValueNodes:
        """A conv cutting the input into P x P patches for tokens is the Linear on
        flattened patches it computes: an input node per (channel, dy, dx) of a
        patch (``position`` c P^2 + dy P + dx) and a LINEAR edge per (pixel,
        feature), not C x D edges padded with P^2 kernel columns."""
        w = op.weight
        x = self.argument(op, 0, w[0].numel(), ValueLayout.FEATURE_MAP)
        op.require(x.ids.numel() == w[0].numel(), f"weight {tuple(w.shape)}: a patch embedding reads the network "
                                                  f"input alone, which is read elsewhere with {x.ids.numel()} features")
        block = self._dense(op, x, EdgeType.LINEAR, 1, **LINEAR_META)
        return ValueNodes(block.ids, ValueLayout.FEATURE_MAP, self.b.versions(block.ids), sdims=w.dim() - 2)

    def _dense(self, op: Layer, x: ValueNodes, edge_type: EdgeType, k: int, groups: int = 1,
               **meta: float) -> NodeGroup:
        """Linear or Conv: one edge per (in, out) pair carrying W[out, in], the
        kernel flattened into k values. A grouped conv (W [out, in / groups, ...])
        has edges only inside each group: output j reads the in / groups channels
        of its group (a depthwise conv: channel j alone), so the missing edges are
        the zeros of the dense kernel."""
        key, w = op.tensors["weight"]
        n_out, n_in = op.matrix.size(0), op.matrix[0].numel() // k
        block = self.b.add_nodes(op.name, n_out, NodeType.HIDDEN, [x.ids])
        src = x.ids[None, :] if groups == 1 else x.ids.view(groups, n_in).repeat_interleave(n_out // groups, 0)
        slot = transposed(*w.shape) if op.geometry.get("transposed") else row_major(torch.arange(n_out), n_in)
        self.b.add_edges(src, block.ids[:, None], op.matrix.reshape(n_out, n_in, k), edge_type,
                         self.b.edge_group(key), slot, **meta)
        self.b.record_edges(key, w, k)
        if "bias" in op.tensors:
            self.b.node_param(*op.tensors["bias"], "bias", [block])
        return block

    def _out(self, block: NodeGroup, like: ValueNodes) -> ValueNodes:
        """The value a new block holds, laid out like ``like``."""
        return ValueNodes(block.ids, like.layout, self.b.versions(block.ids), like.sdims, like.positions)

    def batch_norm(self, op: Layer) -> ValueNodes:
        x = self.argument(op, 0, op.geometry["num_features"], ValueLayout.FEATURES)
        op.require(x.layout != ValueLayout.FLATTENED_MAP, "BatchNorm after Flatten of a feature map is not supported")
        op.require(x.layout in (ValueLayout.FEATURES, ValueLayout.FEATURE_MAP),
                   "BatchNorm normalises dim 1: it needs flat features or a feature map")
        return self._norm(op, x, NodeType.NORM, ("bias", "running_mean", "running_var"))

    def layer_norm(self, op: Layer) -> ValueNodes:
        x = self.argument(op, 0, op.geometry["num_features"])
        op.require(x.layout in (ValueLayout.FEATURES, ValueLayout.TOKENS),
                   "LayerNorm and RMSNorm normalise the last dim: they need features or tokens")
        return self._norm(op, x, NodeType.LAYER_NORM if op.kind == "layer_norm" else NodeType.RMS_NORM, ("bias",))

    def _norm(self, op: Layer, x: ValueNodes, node_type: NodeType, roles: Sequence[str]) -> ValueNodes:
        """A node per feature, the scale on the diagonal edge into it, the shift
        (and running statistics) as node features: exactly invertible."""
        c = x.ids.numel()
        op.require(c == op.geometry["num_features"],
                   f"num_features {op.geometry['num_features']} but the previous layer has {c} outputs")
        block = self.b.add_nodes(op.name, c, node_type, [x.ids])
        if op.weight is None:
            self.b.identity(x.ids, block.ids, EdgeType.NORM)
        else:
            key, w = op.tensors["weight"]
            op.require(w.shape == (c,), f"weight shape {tuple(w.shape)} does not match {c} features")
            self.b.add_edges(x.ids[:, None], block.ids[:, None], w.reshape(c, 1, 1), EdgeType.NORM,
                             self.b.edge_group(key), row_major(torch.arange(c), 1), **LINEAR_META)
            self.b.record_edges(key, w)
        for role in roles:
            if role in op.tensors:
                self.b.node_param(*op.tensors[role], role, [block])
        if "num_batches_tracked" in op.tensors:
            self.b.record_const(*op.tensors["num_batches_tracked"])
        return self._out(block, x)

    def embedding(self, op: Layer) -> ValueNodes:
        """Token v -> feature d carries weight[v, d] (a Linear on one-hot tokens);
        on torch.arange positions the tokens are position nodes."""
        key, w = op.tensors["weight"]
        source = self.values[op.args[0]]
        if source is POSITIONS:
            src = self.b.add_nodes(tag(op.name, "positions"), w.size(0), NodeType.POSITION,
                                   position=torch.arange(w.size(0))).ids
            edge_type = EdgeType.POS_EMBED
        else:
            op.require(isinstance(source, PendingInput),
                       "an nn.Embedding must read token ids (a network input) or torch.arange positions")
            x = self.argument(op, 0, w.size(0), ValueLayout.TOKEN_IDS)
            op.require(x.layout == ValueLayout.TOKEN_IDS and x.ids.numel() == w.size(0),
                       f"weight {tuple(w.shape)}: the input is read elsewhere as features, not as token ids")
            src, edge_type = x.ids, EdgeType.EMBED
        block = self.b.add_nodes(op.name, w.size(1), NodeType.HIDDEN, [src])
        self.b.dense(src, block.ids, w.T.unsqueeze(-1), transposed(*w.shape), edge_type, key, **LINEAR_META)
        self.b.record_edges(key, w)
        return ValueNodes(block.ids, ValueLayout.TOKENS, self.b.versions(block.ids))

    def act(self, op: Act) -> ValueNodes:
        x = self._annotated(op)
        op.require(bool((self.b.column(x.ids, "act_identity") == 1).all()),
                   f"two activations in a row after {self.b.group_name(x.ids[0])!r}")
        self.b.set_activation(x.ids, op.kind, op.param)
        return self.changed(x)

    def _annotated(self, op: Op) -> ValueNodes:
        """The argument of an op that changes its nodes in place, after the checks."""
        first = "the network must start with a Linear, Conv or BatchNorm layer"
        op.require(not self._unread(op.args[0]), first)
        x = self.argument(op, 0)
        op.require(not bool((self.b.node_types(x.ids) == NodeType.INPUT).any()), first)
        op.require(not self.b.consumed(x.ids), "its input is also read by another layer before it; "
                                               "the graph holds one value per neuron")
        return x

    def pool(self, op: Pool) -> ValueNodes:
        x = self._annotated(op)
        op.require(x.layout == ValueLayout.FEATURE_MAP, "pooling needs a conv feature map")
        col = self.b.column(x.ids, f"pool_{op.kind}")
        # window pools multiply their sizes; adaptive pooling to P positions sets -P, which a later window pool keeps
        self.b.set_column(x.ids, f"pool_{op.kind}",
                          op.size if op.size < 0 else col if bool((col < 0).any()) else col.clamp(min=1) * op.size)
        return self.changed(x, positions=op.positions)

    def mean(self, op: Mean) -> ValueNodes:
        """Global average pooling: over the spatial dims of a map or over the tokens."""
        x = self._annotated(op)
        spatial = {ValueLayout.FEATURE_MAP: {2, 3, -1, -2}, ValueLayout.TOKENS: {1, -2}}.get(x.layout, set())
        op.require(set(op.dims) <= spatial,
                   f"mean over dims {sorted(op.dims)} is not a spatial pooling or a mean over tokens")
        self.b.set_column(x.ids, "pool_avg", -1)
        return self.changed(x, layout=ValueLayout.FEATURES, positions=1)

    def select_token(self, op: SelectToken) -> ValueNodes:
        x = self._annotated(op)
        op.require(x.layout == ValueLayout.TOKENS, "x[:, k] is supported on a token sequence only")
        self.b.set_column(x.ids, "read_token", op.index)
        return self.changed(x, layout=ValueLayout.FEATURES)

    def flatten(self, op: Flatten) -> ValueNodes | PendingInput:
        if op.start_dim == 1 and self._unread(op.args[0]):
            self.values[op.args[0]].flattened = True  # flattening the raw input: the inputs are its features
            return self.values[op.args[0]]
        x = self.argument(op, 0)
        if op.start_dim == 2:
            op.require(x.layout == ValueLayout.FEATURE_MAP, "flatten(2) needs a feature map")
            op.require(op.channels in (None, x.ids.numel()),
                       f"reshape to {op.channels} channels of a feature map with {x.ids.numel()} channels")
            return replace(x, sdims=1)
        op.require(x.layout != ValueLayout.TOKENS,
                   "flattening a token sequence is not supported; pool over the tokens first (x[:, 0] or x.mean(1))")
        if x.layout != ValueLayout.FEATURE_MAP:
            return x
        if x.positions == 1:
            return replace(x, layout=ValueLayout.FEATURES)
        return replace(x, layout=ValueLayout.FLATTENED_MAP, flat_name=op.name)

    def _unflatten(self, op: Layer, x: ValueNodes, n_in: int) -> ValueNodes:
        """The Linear after a Flatten of C channels x S positions reads (channel,
        position) nodes: node c*S+p hangs off channel c by a flatten edge."""
        c = x.ids.numel()
        op.require(n_in % c == 0, f"in_features {n_in} is not a multiple of the {c} channels before Flatten")
        positions = n_in // c
        op.require(x.positions in (None, positions), f"in_features {n_in} != {c} channels x {x.positions} positions")
        if positions == 1:
            return replace(x, layout=ValueLayout.FEATURES)
        if positions not in x.flat_nodes:
            flat = torch.arange(c * positions)
            block = self.b.add_nodes(tag(x.flat_name or op.name, "flatten"), c * positions, NodeType.FLATTEN,
                                     [x.ids], flat % positions, flat)
            self.b.identity(x.ids.repeat_interleave(positions), block.ids, EdgeType.FLATTEN)
            x.flat_nodes[positions] = block.ids
        ids = x.flat_nodes[positions]
        return ValueNodes(ids, ValueLayout.FEATURES, self.b.versions(ids))

    def to_tokens(self, op: ToTokens) -> ValueNodes:
        x = self.argument(op, 0)
        op.require(x.layout == ValueLayout.FEATURE_MAP and x.sdims == 1,
                   "the transpose to tokens needs a feature map [B, C, L] (flatten(2) a 2-D map first)")
        return replace(x, layout=ValueLayout.TOKENS, sdims=0)

    def add(self, op: Add) -> ValueNodes:
        """A residual sum: a RESIDUAL node per feature with identity edges from
        both operands; ``x + P`` of a positional parameter P: see :meth:`_param_rows`."""
        params = [i for i in (0, 1) if isinstance(self.values[op.args[i]], Param)]
        if params:
            op.require(len(params) == 1, "the sum of two parameters is not wired")
            return self._param_rows(op, 1 - params[0], [self.values[op.args[params[0]]]], NodeType.POSITION,
                                    EdgeType.POS_EMBED, "positional embedding")
        order = (1, 0) if self._unread(op.args[0]) else (0, 1)
        first = self.argument(op, order[0])
        second = self.argument(op, order[1], first.ids.numel(), first.layout)
        a, b = (first, second) if order == (0, 1) else (second, first)
        return self._elementwise(op, a, b, SUMMABLE, NodeType.RESIDUAL, EdgeType.RESIDUAL, "sum")

    def mul(self, op: Mul) -> ValueNodes:
        """An elementwise product: a PRODUCT node per feature with an edge from each operand."""
        a = self.argument(op, 0)
        b = self.argument(op, 1, a.ids.numel(), a.layout)
        return self._elementwise(op, a, b, (ValueLayout.FEATURES, ValueLayout.TOKENS), NodeType.PRODUCT,
                                 EdgeType.PRODUCT, "product")

    def _elementwise(self, op: Op, a: ValueNodes, b: ValueNodes, layouts: Sequence[ValueLayout],
                     node_type: NodeType, edge_type: EdgeType, what: str) -> ValueNodes:
        """A node per feature with an identity edge from each operand (same size and layout, one of ``layouts``)."""
        op.require(a.ids.numel() == b.ids.numel() and a.layout == b.layout and a.layout in layouts,
                   f"{what} of a {a.layout} value of {a.ids.numel()} features and a {b.layout} value of "
                   f"{b.ids.numel()}")
        block = self.b.add_nodes(op.name, a.ids.numel(), node_type, [a.ids, b.ids])
        self.b.identity(a.ids, block.ids, edge_type)
        self.b.identity(b.ids, block.ids, edge_type)
        return self._out(block, a)

    def _unread(self, value: int) -> bool:
        v = self.values[value]
        return isinstance(v, PendingInput) and v.nodes is None

    def cat(self, op: Cat) -> ValueNodes:
        """Along the features: the id lists joined (no nodes). Along the tokens:
        class-token parameters prepended (see :meth:`_param_rows`)."""
        values = [self.values[a] for a in op.args]
        params = [v for v in values if isinstance(v, Param)]
        if params:
            op.require(values[:len(params)] == params and len(values) == len(params) + 1 and op.dim in (1, -2),
                       "only class-token parameters prepended to one token sequence (torch.cat([cls, x], dim=1)) "
                       "are supported")
            return self._param_rows(op, len(params), params, NodeType.CLASS_TOKEN, EdgeType.CLASS_TOKEN, "class token")
        parts = [self.argument(op, i) for i in range(len(op.args))]
        layout = parts[0].layout
        op.require(all(f.layout == layout and f.sdims == parts[0].sdims for f in parts)
                   and layout in SUMMABLE, f"concatenation of values with layouts {[str(f.layout) for f in parts]}")
        rank, features = {ValueLayout.FEATURES: (2, 1), ValueLayout.FEATURE_MAP: (2 + parts[0].sdims, 1),
                          ValueLayout.TOKENS: (3, 2)}[layout]
        op.require(op.dim in (features, features - rank) or (layout == ValueLayout.FEATURE_MAP and op.dim == 1),
                   f"concatenation along dim {op.dim} of a {layout} value is not along its features")
        ids = torch.cat([f.ids for f in parts])
        return ValueNodes(ids, layout, self.b.versions(ids), parts[0].sdims)

    def _param_rows(self, op: Op, i: int, params: list[Param], node_type: NodeType, edge_type: EdgeType,
                    what: str) -> ValueNodes:
        """Parameters [..., n, D] added to (positional embedding) or prepended
        to (class tokens) token sequence argument i: a node per row k (``position``
        = its token index) with an edge of weight P[k, d] into a RESIDUAL node per
        feature d, which also gets an identity edge from the sequence."""
        d = params[0].tensor[1].size(-1)
        x = self.argument(op, i, d, ValueLayout.TOKENS)
        op.require(x.layout == ValueLayout.TOKENS and x.ids.numel() == d,
                   f"a {what} needs a token sequence of {d} features, got a {x.layout} value of {x.ids.numel()}")
        rows, start = [], 0
        for p in params:
            key, t = p.tensor
            op.require(t.dim() >= 2 and t.size(-1) == d and t[..., 0, 0].numel() == 1,
                       f"parameter {key!r} of shape {tuple(t.shape)}: a {what} must be [..., n, {d}], leading dims of 1")
            n = t.size(-2)
            rows.append((key, t, self.b.add_nodes(key, n, node_type, position=torch.arange(start, start + n)).ids))
            start += n
        block = self.b.add_nodes(op.name, d, NodeType.RESIDUAL, [x.ids] + [ids for _, _, ids in rows])
        self.b.identity(x.ids, block.ids, EdgeType.RESIDUAL)
        for key, t, ids in rows:
            table = t.reshape(-1, d)
            self.b.dense(ids, block.ids, table.T.unsqueeze(-1), transposed(*table.shape), edge_type, key,
                         **LINEAR_META)
            self.b.record_edges(key, t)
        return self._out(block, x)


#: the method that wires each operation type
WIRE_OP: dict[type, Callable[[_Wiring, Op], object]] = {
    Input: _Wiring.input, Param: _Wiring.param, Positions: _Wiring.positions, Layer: _Wiring.layer,
    Attention: _Wiring.attention, Act: _Wiring.act, Pool: _Wiring.pool, Mean: _Wiring.mean,
    SelectToken: _Wiring.select_token, Flatten: _Wiring.flatten, ToTokens: _Wiring.to_tokens, Add: _Wiring.add,
    Mul: _Wiring.mul, Cat: _Wiring.cat,
}
#: the method that wires each kind of :class:`Layer`
WIRE_LAYER: dict[str, Callable[[_Wiring, Layer], ValueNodes]] = {
    "linear": _Wiring.linear, "conv": _Wiring.conv, "batch_norm": _Wiring.batch_norm,
    "layer_norm": _Wiring.layer_norm, "rms_norm": _Wiring.layer_norm, "embedding": _Wiring.embedding,
}

#: Weight dtypes a graph holds exactly (float8, integer and complex weights do not).
GRAPH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _graph_dtype(ops: Sequence[Op], allow_nonfinite: bool) -> tuple[torch.dtype, torch.device]:
    dtype, device = None, None
    for op in ops:
        for key, t in op.params():
            if t.dtype not in GRAPH_DTYPES:
                raise ConversionError(f"parameter {key!r} has dtype {t.dtype}; only {', '.join(map(str, GRAPH_DTYPES))} weights convert")
            if not t.numel():
                raise ConversionError(f"parameter {key!r} is empty (shape {tuple(t.shape)})")
            if not allow_nonfinite and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
                raise NonFiniteWeightError(f"parameter {key!r} holds NaN or Inf (allow_nonfinite=True to accept)")
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
            device = device or t.device
    if dtype is None:
        raise ConversionError("the network has no Linear, Conv or BatchNorm layer with parameters")
    # half precision widens to float32 exactly; the spec keeps each entry's dtype
    return (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype), device


def build_graph(prog: Program, key_order: Sequence[str], allow_nonfinite: bool = False) -> NeuralGraph:
    """The NeuralGraph of ``prog``; ``key_order`` is the state_dict's key order,
    and every key must be held by the graph."""
    dtype, device = _graph_dtype(prog.ops, allow_nonfinite)
    patches = _patch_embeddings(prog)
    kernel = max([op.weight[0, 0].numel() for op in prog.ops
                  if isinstance(op, Layer) and op.kind == "conv" and op.out not in patches] + [1])
    wiring = _Wiring(GraphBuilder(dtype, device, kernel), prog, patches)
    for op in prog.ops:
        wiring.values[op.out] = wiring.run(op)
    out = wiring.values[prog.output]
    last = prog.ops[-1]
    no_layer = "the network has no Linear, Conv or BatchNorm layer"
    last.require(not isinstance(out, PendingInput) or out.nodes is not None, no_layer)
    last.require(not (out is POSITIONS or isinstance(out, Param)), "the network returns a parameter, not a computed value")
    out = out.nodes if isinstance(out, PendingInput) else out
    last.require(out.layout != ValueLayout.FLATTENED_MAP,
                 "the network ends with an unconsumed Flatten of a feature map")
    last.require(not bool((wiring.b.node_types(out.ids) == NodeType.INPUT).any()), no_layer)
    last.require(torch.equal(wiring.b.versions(out.ids), out.version), "the output was changed in place after it was made")
    for key, t in prog.consts.items():
        wiring.b.record_const(key, t)
    return wiring.b.finish(key_order, out.ids)
