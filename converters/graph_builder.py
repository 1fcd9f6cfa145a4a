"""Growing a NeuralGraph: node blocks, edge chunks, fold-back entries.

Vectorised: every call adds a whole block of nodes or a whole set of edges as
tensors (no Python loop over weights). Each node block is one node group;
each parameter is one edge group (its edges may have several edge types, as
a packed q/k/v weight does). :meth:`GraphBuilder.finish` assembles the
:class:`~graphnfn.graph.NeuralGraph`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from graphnfn.graph import (
    EDGE_META, NODE_COL, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, GraphSpec, NeuralGraph, NodeType, ParamEntry,
)

from .errors import ConversionError

ACT0 = NODE_COL["act_identity"]
LINEAR_META = dict(kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1)
# columns of the per-node bookkeeping matrix
TYPE, LAYER, NEURON, GROUP, CONSUMED, VERSION = range(6)


class _Rows:
    """A matrix that grows by appended rows and is written in place by row index."""

    def __init__(self, width: int, dtype: torch.dtype, device):
        self.data = torch.zeros(64, width, dtype=dtype, device=device)
        self.n = 0

    def append(self, rows: Tensor) -> Tensor:
        if self.n + rows.size(0) > self.data.size(0):
            grown = self.data.new_zeros(2 * (self.n + rows.size(0)), self.data.size(1))
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:self.n + rows.size(0)] = rows
        self.n += rows.size(0)
        return torch.arange(self.n - rows.size(0), self.n, device=self.data.device)

    @property
    def view(self) -> Tensor:
        return self.data[:self.n]


@dataclass(frozen=True)
class NodeGroup:
    """Nodes made together by one :meth:`GraphBuilder.add_nodes`: their global
    ids (in neuron order) and the group's index in ``node_groups``."""

    ids: Tensor
    index: int


@dataclass
class _Edges:
    """A grid of edges src[j, i] -> dst[j, i] (broadcast to [n_dst, n_src], j
    outer) carrying kernel[j, i] ([n_dst, n_src, k]) from row slot[0][j] +
    slot[1][i] of their parameter (None: parameter-free). Views of the inputs,
    copied once into the graph's tensors by :meth:`GraphBuilder.finish`."""

    src: Tensor
    dst: Tensor
    kernel: Tensor
    meta: Tensor
    edge_type: EdgeType
    group: int
    slot: tuple[Tensor, Tensor] | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.kernel.shape[0], self.kernel.shape[1]


def row_major(rows: Tensor, n_cols: int) -> tuple[Tensor, Tensor]:
    """Slots of W[rows[j], i] in a [*, n_cols] parameter (a Linear's or
    conv's (out, in) pairs: the edge into neuron j from input i)."""
    return rows[:, None] * n_cols, torch.arange(n_cols, device=rows.device)[None, :]


def transposed(n_rows: int, n_cols: int, cols: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Slots of W[i, cols[j]] in a [n_rows, n_cols] parameter with j outer (a
    column per target: an embedding table's row i feeds feature j, a weight
    stored [in, out] gives output j); ``cols``: all columns when None."""
    cols = torch.arange(n_cols) if cols is None else cols
    return cols[:, None], torch.arange(n_rows, device=cols.device)[None, :] * n_cols


class GraphBuilder:
    def __init__(self, dtype: torch.dtype, device: torch.device, kernel_width: int):
        self.dtype, self.device, self.kernel_width = dtype, device, kernel_width
        self.x = _Rows(len(NODE_FEATURES), dtype, device)
        self.meta = _Rows(6, torch.long, device)
        self.node_groups: list[str] = []
        self.edges: list[_Edges] = []
        self.edge_groups: dict[str, int] = {}
        self.entries: dict[str, ParamEntry] = {}

    # -- nodes ----------------------------------------------------------------
    def add_nodes(self, name: str, n: int, node_type: NodeType, sources: Sequence[Tensor] = (),
                  position: Tensor | None = None, neuron: Tensor | None = None) -> NodeGroup:
        """n nodes one layer deeper than the deepest of ``sources`` (their in-edges' sources)."""
        depth = 1 + max(int(self.meta.view[s, LAYER].max()) for s in sources) if sources else 0
        x = torch.zeros(n, len(NODE_FEATURES), dtype=self.dtype, device=self.device)
        x[:, NODE_COL["position"]] = -1 if position is None else position.to(self.dtype)
        x[:, NODE_COL["read_token"]] = -1
        x[:, ACT0] = 1
        meta = torch.zeros(n, 6, dtype=torch.long, device=self.device)
        meta[:, TYPE], meta[:, LAYER], meta[:, GROUP] = int(node_type), depth, len(self.node_groups)
        meta[:, NEURON] = torch.arange(n, device=self.device) if neuron is None else neuron
        self.node_groups.append(name)
        self.meta.append(meta)
        return NodeGroup(self.x.append(x), len(self.node_groups) - 1)

    def column(self, ids: Tensor, name: str) -> Tensor:
        return self.x.view[ids, NODE_COL[name]]

    def set_column(self, ids: Tensor, name: str, value) -> None:
        self.x.data[ids, NODE_COL[name]] = value.to(self.dtype) if isinstance(value, Tensor) else value

    def set_activation(self, ids: Tensor, kind: Activation, param: float = 0.0) -> None:
        self.x.data[ids, ACT0:ACT0 + len(Activation)] = 0
        self.x.data[ids, ACT0 + int(kind)] = 1
        self.set_column(ids, "act_param", param)

    def group_name(self, node: Tensor) -> str:
        return self.node_groups[int(self.meta.view[node, GROUP])]

    def node_types(self, ids: Tensor) -> Tensor:
        return self.meta.view[ids, TYPE]

    def versions(self, ids: Tensor) -> Tensor:
        return self.meta.view[ids, VERSION].clone()

    def bump(self, ids: Tensor) -> Tensor:
        """Mark the nodes changed in place (activation, pooling); returns their new versions."""
        self.meta.data[ids, VERSION] += 1
        return self.versions(ids)

    def consumed(self, ids: Tensor) -> bool:
        return bool(self.meta.view[ids, CONSUMED].any())

    # -- edges ----------------------------------------------------------------
    def edge_group(self, key: str) -> int:
        return self.edge_groups.setdefault(key, len(self.edge_groups))

    def add_edges(self, src: Tensor, dst: Tensor, kernel: Tensor, edge_type: EdgeType, group: int = -1,
                  slot: tuple[Tensor, Tensor] | None = None, **meta: float) -> None:
        """Edges src[j, i] -> dst[j, i] with kernel values kernel [n_dst, n_src, k]
        (src, dst broadcast to [n_dst, n_src]); see :class:`_Edges`."""
        self.meta.data[src.reshape(-1), CONSUMED] = 1
        values = torch.tensor([meta.get(k, 0) for k in EDGE_META], dtype=self.dtype, device=self.device)
        slot = None if slot is None else (slot[0].to(self.device), slot[1].to(self.device))
        self.edges.append(_Edges(src, dst, kernel, values, edge_type, group, slot))

    def dense(self, src: Tensor, dst: Tensor, kernel: Tensor, slot: tuple[Tensor, Tensor], edge_type: EdgeType,
              key: str, **meta: float) -> None:
        """An edge src[i] -> dst[j] for every pair, carrying kernel[j, i]
        ([n_dst, n_src, k]) from parameter ``key``."""
        self.add_edges(src[None, :], dst[:, None], kernel, edge_type, self.edge_group(key), slot, **meta)

    def identity(self, src: Tensor, dst: Tensor, edge_type: EdgeType, weight: float = 1.0) -> None:
        """Parameter-free edges src[e] -> dst[e] of constant weight."""
        kernel = torch.full((1, 1, 1), weight, dtype=self.dtype, device=self.device).expand(src.numel(), 1, 1)
        self.add_edges(src[:, None], dst[:, None], kernel, edge_type, **LINEAR_META)

    # -- fold-back entries --------------------------------------------------------
    def record(self, key: str, entry: ParamEntry) -> None:
        if key in self.entries:
            raise ConversionError(f"parameter {key!r} is used by two layers; shared weights are not supported")
        self.entries[key] = entry

    def record_edges(self, key: str, t: Tensor, kernel: int = 1) -> None:
        """Parameter ``key`` is held by its edge group, ``kernel`` values per edge."""
        self.record(key, ParamEntry(key, "edge", tuple(t.shape), t.dtype, self.edge_group(key), kernel=kernel))

    def node_param(self, key: str, t: Tensor, column: str, groups: Sequence[NodeGroup]) -> None:
        """Column ``column`` of the groups' nodes holds t[neuron]; t must have one entry per node."""
        ids = torch.cat([g.ids for g in groups])
        if tuple(t.shape) != (ids.numel(),):
            raise ConversionError(f"{key!r}: shape {tuple(t.shape)} does not match the layer's {ids.numel()} outputs")
        self.set_column(ids, column, t[self.meta.view[ids, NEURON]])
        index = tuple(g.index for g in groups)
        self.record(key, ParamEntry(key, "node", tuple(t.shape), t.dtype, index[0] if len(index) == 1 else index,
                                    NODE_COL[column]))

    def record_const(self, key: str, t: Tensor) -> None:
        self.record(key, ParamEntry(key, "const", tuple(t.shape), t.dtype, value=t.detach().clone()))

    # -- the graph --------------------------------------------------------------------
    def finish(self, key_order: Sequence[str], outputs: Tensor) -> NeuralGraph:
        missing = [k for k in key_order if k not in self.entries]
        if missing:
            raise ConversionError(f"parameters {missing} belong to no supported layer; they would be lost")
        self.meta.data[outputs, TYPE] = int(NodeType.OUTPUT)
        self.set_column(outputs, "position", torch.arange(outputs.numel(), device=self.device))
        edge_index, attr, etype, egroup, slot = self._edge_tensors()
        meta = self.meta.view
        return NeuralGraph(
            x=self.x.view.clone(),
            edge_index=edge_index,
            edge_attr=attr,
            node_type=meta[:, TYPE].clone(),
            edge_type=etype,
            layer=meta[:, LAYER].clone(),
            neuron=meta[:, NEURON].clone(),
            node_group=meta[:, GROUP].clone(),
            edge_group=egroup,
            edge_slot=slot,
            spec=GraphSpec(tuple(self.entries[k] for k in key_order), tuple(self.node_groups), tuple(self.edge_groups)),
            num_nodes=self.meta.n,
        )

    def _edge_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """edge_index, edge_attr, edge_type, edge_group, edge_slot: allocated once
        and written chunk by chunk (fresh memory is the cost on big networks)."""
        total = sum(c.shape[0] * c.shape[1] for c in self.edges)
        long = dict(dtype=torch.long, device=self.device)
        edge_index, etype, group, slot = torch.empty(2, total, **long), *(torch.empty(total, **long) for _ in range(3))
        attr = torch.empty(total, WEIGHT_COL + self.kernel_width, dtype=self.dtype, device=self.device)
        start = 0
        for c in self.edges:
            shape = c.shape
            end = start + shape[0] * shape[1]
            edge_index[0, start:end].view(shape).copy_(c.src.expand(shape))
            edge_index[1, start:end].view(shape).copy_(c.dst.expand(shape))
            rows = attr[start:end].view(*shape, -1)
            k = c.kernel.size(2)
            rows[..., :WEIGHT_COL].copy_(c.meta.expand(*shape, -1))
            rows[..., WEIGHT_COL:WEIGHT_COL + k].copy_(c.kernel)
            rows[..., WEIGHT_COL + k:].zero_()
            etype[start:end].fill_(int(c.edge_type))
            group[start:end].fill_(c.group)
            if c.slot is None:
                slot[start:end].fill_(-1)
            else:
                torch.add(*c.slot, out=slot[start:end].view(shape))
            start = end
        return edge_index, attr, etype, group, slot
