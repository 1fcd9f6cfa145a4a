"""NeuralGraph -> state_dict, the exact inverse of :func:`converters.to_graph`."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch

from graphnfn.graph import WEIGHT_COL, GraphSpec, NeuralGraph, ParamEntry

from .errors import ConversionError
from .threads import single_threaded


def _scatter(out: Tensor, index: Tensor, values: Tensor, entry: ParamEntry) -> Tensor:
    """out[index] = values, after checking the index hits every row exactly once."""
    inside = index.numel() == 0 or (int(index.min()) >= 0 and int(index.max()) < out.size(0))
    if not inside or not bool((torch.bincount(index, minlength=out.size(0)) == 1).all()):
        raise ConversionError(f"{entry.key!r}: the graph's {values.size(0)} entries do not cover shape {entry.shape} exactly once")
    out[index] = values
    return out


def _edge_tensor(g: NeuralGraph, entry: ParamEntry) -> Tensor:
    mask = g.edge_group == entry.group
    numel = 1
    for s in entry.shape:
        numel *= s
    values = g.edge_attr[mask, WEIGHT_COL:WEIGHT_COL + entry.kernel]
    out = values.new_empty(numel // entry.kernel, entry.kernel)
    return _scatter(out, g.edge_slot[mask], values, entry).reshape(entry.shape)


def _node_tensor(g: NeuralGraph, entry: ParamEntry) -> Tensor:
    groups = entry.group if isinstance(entry.group, tuple) else (entry.group,)
    mask = torch.isin(g.node_group, torch.tensor(groups, device=g.node_group.device))
    values = g.x[mask, entry.column]
    return _scatter(values.new_empty(entry.shape), g.neuron[mask], values, entry)


@single_threaded
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
            t = entry.value.to(g.x.device)
        elif entry.kind == "edge":
            t = _edge_tensor(g, entry)
        else:
            t = _node_tensor(g, entry)
        out[entry.key] = t.to(entry.dtype)
    return out
