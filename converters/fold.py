"""NeuralGraph -> state_dict, the exact inverse of :func:`converters.to_graph`."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch

from graphnfn.graph import WEIGHT_COL, GraphSpec, NeuralGraph, ParamEntry

from .errors import ConversionError


def _scatter(out: Tensor, index: tuple[Tensor, ...], values: Tensor, entry: ParamEntry) -> Tensor:
    """out[index] = values, after checking the index hits every entry exactly once."""
    hit = torch.zeros(out.shape[: len(index)], dtype=torch.int32, device=out.device)
    hit.index_put_(index, torch.ones_like(index[0], dtype=torch.int32), accumulate=True)
    if not bool((hit == 1).all()):
        raise ConversionError(f"{entry.key!r}: the graph's {values.size(0)} entries do not cover shape {entry.shape} exactly once")
    out[index] = values
    return out


def _edge_tensor(g: NeuralGraph, entry: ParamEntry) -> Tensor:
    mask = g.edge_group == entry.group
    src, dst = g.edge_index[:, mask]
    k = 1
    for s in entry.shape[2:]:
        k *= s
    values = g.edge_attr[mask, WEIGHT_COL:WEIGHT_COL + k]
    if entry.shape and len(entry.shape) == 1:  # diagonal scale: indexed by its target alone
        out = values.new_empty(entry.shape[0], 1)
        index = (g.neuron[dst],)
    else:
        out = values.new_empty(entry.shape[0], entry.shape[1], k)
        index = (g.neuron[dst], g.neuron[src])
    return _scatter(out, index, values, entry).reshape(entry.shape)


def _node_tensor(g: NeuralGraph, entry: ParamEntry) -> Tensor:
    mask = g.node_group == entry.group
    values = g.x[mask, entry.column]
    return _scatter(values.new_empty(entry.shape), (g.neuron[mask],), values, entry)


def from_graph(g: NeuralGraph | Batch) -> dict[str, Tensor] | list[dict[str, Tensor]]:
    """The state_dict a graph encodes: same keys (in order), shapes and dtypes.

    Values come from the graph's current features, so a graph whose edge or
    node features were edited folds back into the edited network. A Batch gives
    one state_dict per graph.
    """
    if isinstance(g, Batch):
        return [from_graph(d) for d in g.to_data_list()]
    spec = getattr(g, "spec", None)
    if not isinstance(spec, GraphSpec):
        raise ConversionError("this graph has no fold-back spec; was it made by converters.to_graph?")
    out: dict[str, Tensor] = {}
    for entry in spec.entries:
        if entry.kind == "const":
            t = torch.tensor(entry.value, dtype=entry.dtype, device=g.x.device)
        elif entry.kind == "edge":
            t = _edge_tensor(g, entry)
        else:
            t = _node_tensor(g, entry)
        out[entry.key] = t.to(entry.dtype)
    return out
