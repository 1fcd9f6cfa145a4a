"""Wire a list of operations (see :mod:`converters.ops`) into a NeuralGraph.

Vectorised: each layer adds its nodes and edges as whole tensors (no Python
loop over weights). Node layers are built in execution order; each op either
adds a layer of nodes with the edges into it (Linear, Conv, BatchNorm, Flatten)
or annotates the current layer (activation, pooling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

from graphnfn.graph import (
    EDGE_COL, EDGE_META, NODE_COL, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, GraphSpec,
    NeuralGraph, NodeType, ParamEntry,
)

from .errors import ConversionError, NonFiniteWeightError
from .ops import Act, Flatten, Op, ParamLayer, Pool

_ACT0 = NODE_COL["act_identity"]
_LINEAR_META = dict(kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1)


@dataclass
class _NodeBlock:
    name: str
    x: Tensor  # [n, F_node], written in place by later ops (activation, pooling)
    node_type: NodeType
    depth: int
    neuron: Tensor
    ids: Tensor  # global node ids, in neuron order
    spatial: bool


class _GraphBuilder:
    def __init__(self, dtype: torch.dtype, device: torch.device, kernel_width: int):
        self.dtype, self.device, self.kernel_width = dtype, device, kernel_width
        self.nodes: list[_NodeBlock] = []
        self.edges: list[tuple[Tensor, Tensor, Tensor, EdgeType, int]] = []  # src, dst, attr, type, group
        self.edge_groups: list[str] = []
        self.entries: dict[str, ParamEntry] = {}
        self.num_nodes = 0

    # -- primitives ---------------------------------------------------------
    def add_nodes(self, name: str, n: int, node_type: NodeType, spatial: bool, position: Tensor | None = None,
                  neuron: Tensor | None = None) -> _NodeBlock:
        x = torch.zeros(n, len(NODE_FEATURES), dtype=self.dtype, device=self.device)
        x[:, NODE_COL["position"]] = -1 if position is None else position.to(self.dtype)
        x[:, _ACT0] = 1
        ids = torch.arange(self.num_nodes, self.num_nodes + n, device=self.device)
        depth = self.nodes[-1].depth + 1 if self.nodes else 0
        neuron = torch.arange(n, device=self.device) if neuron is None else neuron
        block = _NodeBlock(name, x, node_type, depth, neuron, ids, spatial)
        self.nodes.append(block)
        self.num_nodes += n
        return block

    def add_edges(self, name: str | None, src: Tensor, dst: Tensor, kernel: Tensor, edge_type: EdgeType,
                  **meta: float) -> int:
        """Edges src[e] -> dst[e] with kernel values kernel [E, k]; returns the
        edge group (-1 for parameter-free edges, ``name=None``)."""
        attr = torch.zeros(src.numel(), WEIGHT_COL + self.kernel_width, dtype=self.dtype, device=self.device)
        attr[:, :WEIGHT_COL] = torch.tensor([meta.get(k, 0) for k in EDGE_META], dtype=self.dtype)
        attr[:, WEIGHT_COL:WEIGHT_COL + kernel.size(1)] = kernel
        group = -1
        if name is not None:
            group = len(self.edge_groups)
            self.edge_groups.append(name)
        self.edges.append((src, dst, attr, edge_type, group))
        return group

    def record(self, key: str, entry: ParamEntry) -> None:
        if key in self.entries:
            raise ConversionError(f"parameter {key!r} is used by two layers; shared weights are not supported")
        self.entries[key] = entry

    def node_param(self, layer: ParamLayer, role: str, column: str, block: _NodeBlock) -> None:
        if role in layer.tensors:
            key, t = layer.tensors[role]
            if tuple(t.shape) != (block.ids.numel(),):
                raise ConversionError(f"{key!r}: shape {tuple(t.shape)} does not match the layer's {block.ids.numel()} outputs")
            block.x[:, NODE_COL[column]] = t
            self.record(key, ParamEntry(key, "node", tuple(t.shape), t.dtype, len(self.nodes) - 1, NODE_COL[column]))

    def edge_param(self, layer: ParamLayer, group: int) -> None:
        key, t = layer.tensors["weight"]
        self.record(key, ParamEntry(key, "edge", tuple(t.shape), t.dtype, group))

    # -- ops ----------------------------------------------------------------
    def inputs(self, n: int, spatial: bool) -> _NodeBlock:
        return self.add_nodes("input", n, NodeType.INPUT, spatial, torch.arange(n, device=self.device))

    def flatten_to(self, cur: _NodeBlock, positions: int, name: str) -> _NodeBlock:
        """(channel, position) nodes for a Linear after Flatten: node c*S+p hangs off channel c."""
        c = cur.ids.numel()
        flat = torch.arange(c * positions, device=self.device)
        block = self.add_nodes(f"{name}:flatten", c * positions, NodeType.FLATTEN, False, flat % positions, flat)
        ones = torch.ones(flat.numel(), 1, dtype=self.dtype, device=self.device)
        self.add_edges(None, cur.ids.repeat_interleave(positions), block.ids, ones, EdgeType.FLATTEN, **_LINEAR_META)
        return block

    def dense(self, layer: ParamLayer, cur: _NodeBlock, edge_type: EdgeType, spatial: bool, **meta: float) -> _NodeBlock:
        """Linear or Conv: one edge per (in, out) pair carrying W[out, in] (flattened kernel)."""
        w = layer.weight
        n_out, n_in = w.shape[:2]
        block = self.add_nodes(layer.name, n_out, NodeType.HIDDEN, spatial)
        src = cur.ids.repeat(n_out)
        dst = block.ids.repeat_interleave(n_in)
        self.edge_param(layer, self.add_edges(layer.name, src, dst, w.reshape(n_out * n_in, -1), edge_type, **meta))
        self.node_param(layer, "bias", "bias", block)
        return block

    def norm(self, layer: ParamLayer, cur: _NodeBlock) -> _NodeBlock:
        """BatchNorm: a node per channel, the scale on the diagonal edge into it."""
        c = cur.ids.numel()
        block = self.add_nodes(layer.name, c, NodeType.NORM, cur.spatial)
        scale = layer.weight if layer.weight is not None else torch.ones(c, dtype=self.dtype, device=self.device)
        if scale.shape != (c,):
            raise ConversionError(f"{layer.name}: weight shape {tuple(scale.shape)} does not match {c} features")
        group = self.add_edges(layer.name, cur.ids, block.ids, scale.reshape(c, 1), EdgeType.NORM, **_LINEAR_META)
        if layer.weight is not None:
            self.edge_param(layer, group)
        for role in ("bias", "running_mean", "running_var"):
            self.node_param(layer, role, role, block)
        if "num_batches_tracked" in layer.tensors:
            key, t = layer.tensors["num_batches_tracked"]
            self.record(key, ParamEntry(key, "const", tuple(t.shape), t.dtype, value=t.tolist()))
        return block

    def finish(self, key_order: Sequence[str]) -> NeuralGraph:
        missing = [k for k in key_order if k not in self.entries]
        if missing:
            raise ConversionError(f"parameters {missing} belong to no supported layer; they would be lost")
        last = self.nodes[-1]
        if last.node_type is NodeType.INPUT:
            raise ConversionError("the network has no Linear, Conv or BatchNorm layer")
        last.node_type = NodeType.OUTPUT
        last.x[:, NODE_COL["position"]] = last.neuron.to(self.dtype)
        src, dst, attr, etype, egroup = zip(*self.edges)
        cat_nodes = lambda f: torch.cat([f(b) for b in self.nodes])  # noqa: E731
        long = dict(dtype=torch.long, device=self.device)
        return NeuralGraph(
            x=cat_nodes(lambda b: b.x),
            edge_index=torch.stack([torch.cat(src), torch.cat(dst)]),
            edge_attr=torch.cat(attr),
            node_type=cat_nodes(lambda b: torch.full((b.ids.numel(),), int(b.node_type), **long)),
            edge_type=torch.cat([torch.full((s.numel(),), int(t), **long) for s, t in zip(src, etype)]),
            layer=cat_nodes(lambda b: torch.full((b.ids.numel(),), b.depth, **long)),
            neuron=cat_nodes(lambda b: b.neuron),
            node_group=cat_nodes(lambda b: torch.full((b.ids.numel(),), self.nodes.index(b), **long)),
            edge_group=torch.cat([torch.full((s.numel(),), g, **long) for s, g in zip(src, egroup)]),
            spec=GraphSpec(tuple(self.entries[k] for k in key_order), tuple(b.name for b in self.nodes),
                           tuple(self.edge_groups)),
            num_nodes=self.num_nodes,
        )


def _graph_dtype(layers: Iterable[ParamLayer], allow_nonfinite: bool) -> tuple[torch.dtype, torch.device]:
    dtype, device = None, None
    for layer in layers:
        for key, t in layer.tensors.values():
            if key.endswith("num_batches_tracked"):
                continue
            if not t.is_floating_point():
                raise ConversionError(f"parameter {key!r} has dtype {t.dtype}; only floating-point weights convert")
            if not allow_nonfinite and not bool(torch.isfinite(t).all()):
                raise NonFiniteWeightError(f"parameter {key!r} holds NaN or Inf (allow_nonfinite=True to accept)")
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
            device = device or t.device
    if dtype is None:
        raise ConversionError("the network has no Linear, Conv or BatchNorm layer with parameters")
    # half precision widens to float32 exactly; the spec keeps each entry's dtype
    return (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype), device


def _check(cond: bool, op: Op, why: str) -> None:
    if not cond:
        where = op.tensors["weight"][0] if isinstance(op, ParamLayer) and "weight" in op.tensors else op.name
        raise ConversionError(f"{where or type(op).__name__}: {why}")


def build_graph(ops: Sequence[Op], key_order: Sequence[str], allow_nonfinite: bool = False) -> NeuralGraph:
    """The NeuralGraph of ``ops``; ``key_order`` is the state_dict's key order,
    and every key must be consumed by a layer."""
    layers = [op for op in ops if isinstance(op, ParamLayer)]
    dtype, device = _graph_dtype(layers, allow_nonfinite)
    kernel = max([layer.weight[0, 0].numel() for layer in layers if layer.kind == "conv"] + [1])
    b = _GraphBuilder(dtype, device, kernel)
    cur: _NodeBlock | None = None
    flatten: Flatten | None = None  # a Flatten of a feature map waiting for its Linear
    positions: int | None = None  # spatial positions per channel, where pooling made it known
    for op in ops:
        if isinstance(op, ParamLayer):
            w = op.weight
            if op.kind == "norm":
                n_in = op.geometry["num_features"]
                cur = cur or b.inputs(n_in, spatial=False)
                _check(flatten is None, op, "BatchNorm after Flatten of a feature map is not supported")
                _check(cur.ids.numel() == n_in, op, f"num_features {n_in} but the previous layer has {cur.ids.numel()} outputs")
                cur = b.norm(op, cur)
                continue
            n_in = w.size(1)
            if op.kind == "conv":
                cur = cur or b.inputs(n_in, spatial=True)
                _check(cur.spatial and flatten is None, op, "a convolution needs a feature map; the previous layer is flat")
                _check(cur.ids.numel() == n_in, op, f"weight {tuple(w.shape)} expects {n_in} input channels, previous layer has {cur.ids.numel()}")
                kh, kw = (1, w.size(2)) if w.dim() == 3 else (w.size(2), w.size(3))
                g = op.geometry
                cur = b.dense(op, cur, EdgeType.CONV, True, kernel_h=kh, kernel_w=kw,
                              stride_h=g["stride"][0], stride_w=g["stride"][1], padding_h=g["padding"][0],
                              padding_w=g["padding"][1], dilation_h=g["dilation"][0], dilation_w=g["dilation"][1],
                              padding_mode=g["padding_mode"])
                positions = None
                continue
            cur = cur or b.inputs(n_in, spatial=False)
            if cur.spatial:
                _check(flatten is not None, op, "Linear applied to a conv feature map without Flatten")
                c = cur.ids.numel()
                _check(n_in % c == 0, op, f"in_features {n_in} is not a multiple of the {c} channels before Flatten")
                _check(positions in (None, n_in // c), op, f"in_features {n_in} != {c} channels x {positions} positions")
                if n_in // c > 1:
                    cur = b.flatten_to(cur, n_in // c, flatten.name or op.name)
                flatten = None
            _check(cur.ids.numel() == n_in, op, f"weight {tuple(w.shape)} expects {n_in} inputs, the previous layer has {cur.ids.numel()} outputs")
            cur = b.dense(op, cur, EdgeType.LINEAR, False, **_LINEAR_META)
        elif cur is None and isinstance(op, Flatten):
            continue  # flattening the raw input: the inputs are the flat features
        elif cur is None:
            raise ConversionError(f"{op.name or type(op).__name__}: the network must start with a Linear, Conv or BatchNorm layer")
        elif isinstance(op, Act):
            _check(bool(cur.x[0, _ACT0] == 1), op, f"two activations in a row after {cur.name!r}")
            cur.x[:, _ACT0] = 0
            cur.x[:, _ACT0 + int(op.kind)] = 1
            cur.x[:, NODE_COL["act_param"]] = op.param
        elif isinstance(op, Pool):
            _check(cur.spatial and flatten is None, op, "pooling needs a conv feature map")
            col = cur.x[:, NODE_COL[f"pool_{op.kind}"]]
            if op.size < 0 or bool(col[0] < 0):
                col.fill_(-1)
            else:
                col.copy_(col.clamp(min=1) * op.size)
            positions = op.positions
        elif isinstance(op, Flatten) and cur.spatial:
            if positions == 1:
                cur.spatial = False  # globally pooled: channels are the features
            else:
                flatten = op
    _check(flatten is None, ops[-1], "the network ends with an unconsumed Flatten of a feature map")
    return b.finish(key_order)
