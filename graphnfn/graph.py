"""The neuron graph: one node per neuron, one edge per connection.

A :class:`NeuralGraph` is a :class:`torch_geometric.data.Data` whose feature
columns are fixed by name (``NODE_FEATURES``, ``EDGE_FEATURES``) so that every
converter writes, and every model reads, the same layout. Beside the features it
carries what :func:`converters.from_graph` needs to fold the graph back into a
state_dict bit for bit: per node and per edge the parameter group and the index
inside the parameter tensor, and a :class:`GraphSpec` naming every state_dict
entry. Those bookkeeping fields are not features: models must not read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data


class NodeType(IntEnum):
    """Role of a node. Only ``HIDDEN`` (and ``NORM``/``FLATTEN`` blocks with
    their channel) nodes are interchangeable; ``INPUT`` and ``OUTPUT`` nodes
    carry their index in the ``position`` feature."""

    INPUT = 0
    HIDDEN = 1
    OUTPUT = 2
    NORM = 3  # one node per normalised feature/channel (BatchNorm)
    FLATTEN = 4  # one node per (channel, spatial position) after Flatten


class EdgeType(IntEnum):
    """Kind of connection an edge stands for."""

    LINEAR = 0  # W[j, i] of nn.Linear
    CONV = 1  # kernel W[j, i] of nn.Conv1d / nn.Conv2d
    NORM = 2  # diagonal scale (BatchNorm weight) from a channel to its norm node
    FLATTEN = 3  # identity from channel c to its (c, p) flatten node


class Activation(IntEnum):
    """The elementwise map after a neuron; it decides the neuron's symmetry group
    (ReLU: permutation and positive scaling; tanh and sine: permutation and sign)."""

    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2  # act_param = negative slope
    GELU = 3
    TANH = 4
    SIGMOID = 5
    SINE = 6  # act_param = w0 (sin(w0 * x)), as in SIRENs
    SILU = 7
    ELU = 8  # act_param = alpha
    SOFTPLUS = 9  # act_param = beta
    SOFTMAX = 10  # over the output neurons
    LOG_SOFTMAX = 11
    UNKNOWN = 12  # a bare state_dict does not say which activation was used


#: Node feature columns, in order. ``position`` is the neuron's index for input
#: and output neurons and the spatial position for flatten nodes, -1 where the
#: node is interchangeable. ``pool_max``/``pool_avg`` give the pooling window
#: size (product of kernel dims, -1 for global pooling) applied after the node.
NODE_FEATURES: tuple[str, ...] = (
    "bias",
    "running_mean",
    "running_var",
    "position",
    "act_param",
    "pool_max",
    "pool_avg",
) + tuple(f"act_{a.name.lower()}" for a in Activation)

#: Edge feature columns before the kernel values. Linear, norm and flatten edges
#: have a 1x1 "kernel"; ``padding`` is -1 for ``padding="same"``;
#: ``padding_mode`` indexes ``PADDING_MODES``. The kernel, flattened row-major,
#: starts at column ``len(EDGE_META)`` and is zero-padded to the widest kernel.
EDGE_META: tuple[str, ...] = (
    "kernel_h",
    "kernel_w",
    "stride_h",
    "stride_w",
    "padding_h",
    "padding_w",
    "dilation_h",
    "dilation_w",
    "padding_mode",
)
PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")

NODE_COL = {name: i for i, name in enumerate(NODE_FEATURES)}
EDGE_COL = {name: i for i, name in enumerate(EDGE_META)}
#: Column of the first kernel value (the weight itself for a Linear edge).
WEIGHT_COL = len(EDGE_META)


@dataclass(frozen=True)
class ParamEntry:
    """Where one state_dict entry lives in the graph.

    kind ``"edge"``: the kernel columns of the edges whose ``edge_group`` is
    ``group``, indexed by the ``neuron`` of their target (dim 0) and source
    (dim 1); a 1-D entry (a diagonal scale) is indexed by the target alone.
    kind ``"node"``: column ``column`` of the nodes whose ``node_group`` is
    ``group``, indexed by ``neuron``. kind ``"const"``: ``value`` itself (an
    integer buffer such as ``num_batches_tracked``).
    """

    key: str
    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    group: int = -1
    column: int = -1
    value: Any = None


@dataclass(frozen=True, repr=False)
class GraphSpec:
    """Fold-back metadata of one graph: its state_dict entries in their original
    order and a name per node group (the module that owns those neurons)."""

    entries: tuple[ParamEntry, ...]
    node_groups: tuple[str, ...]
    edge_groups: tuple[str, ...]

    def __repr__(self) -> str:
        return f"GraphSpec({len(self.entries)} entries, {len(self.node_groups)} node groups)"


class NeuralGraph(Data):
    """A network as a graph. Information flows along ``edge_index[0] -> [1]``.

    Fields (N nodes, E edges):
        x          [N, len(NODE_FEATURES)]  node features (bias, stats, activation...)
        edge_index [2, E]                   source -> target neuron
        edge_attr  [E, WEIGHT_COL + K]      edge meta and kernel values (K = widest kernel)
        node_type  [N] long                 :class:`NodeType`
        edge_type  [E] long                 :class:`EdgeType`
        layer      [N] long                 depth of the node's layer, 0 for inputs
    Bookkeeping for :func:`converters.from_graph` (not features):
        neuron     [N] long   index of the neuron in its parameter tensors
        node_group [N] long   index into ``spec.node_groups``
        edge_group [E] long   index into ``spec.edge_groups``, -1 for parameter-free edges
        spec       :class:`GraphSpec`
    """

    @property
    def weight(self) -> Tensor:
        """[E] the first kernel value of each edge (the weight of a Linear edge)."""
        return self.edge_attr[:, WEIGHT_COL]

    @property
    def kernel_width(self) -> int:
        """K, the number of kernel columns in ``edge_attr``."""
        return self.edge_attr.size(1) - WEIGHT_COL

    def summary(self) -> str:
        """A human-readable table: nodes, edges and feature sizes per layer."""
        lines = [
            f"NeuralGraph: {self.num_nodes} nodes, {self.num_edges} edges, "
            f"node features {self.x.size(1)}, edge features {self.edge_attr.size(1)} "
            f"({WEIGHT_COL} meta + {self.kernel_width} kernel), dtype {self.x.dtype}",
            f"{'layer':>5}  {'module':<24}{'node type':<10}{'nodes':>7}{'in-edges':>10}",
        ]
        in_layer = self.layer[self.edge_index[1]]
        for group, name in enumerate(self.spec.node_groups):
            mask = self.node_group == group
            if not bool(mask.any()):
                continue
            depth = int(self.layer[mask][0])
            ntype = NodeType(int(self.node_type[mask][0])).name.lower()
            edges = int((in_layer == depth).sum())
            lines.append(f"{depth:>5}  {name:<24}{ntype:<10}{int(mask.sum()):>7}{edges:>10}")
        return "\n".join(lines)

    def to_networkx(self):
        """The graph as a ``networkx.MultiDiGraph`` with features as attributes."""
        from torch_geometric.utils import to_networkx

        return to_networkx(
            self,
            node_attrs=["x", "node_type", "layer"],
            edge_attrs=["edge_attr", "edge_type"],
            to_multi=True,
        )


def pad_kernels(graphs: Sequence[NeuralGraph], width: int | None = None) -> list[NeuralGraph]:
    """Zero-pad every graph's kernel columns to ``width`` (default: the widest)."""
    width = max(g.kernel_width for g in graphs) if width is None else width
    out = []
    for g in graphs:
        if g.kernel_width < width:
            g = g.clone()
            g.edge_attr = torch.nn.functional.pad(g.edge_attr, (0, width - g.kernel_width))
        out.append(g)
    return out


def collate(graphs: Sequence[NeuralGraph]) -> Batch:
    """Batch graphs of any architectures (kernels padded to the widest).

    ``batch.to_data_list()`` gives graphs that still fold back exactly.
    """
    if not graphs:
        raise ValueError("collate needs at least one graph")
    return Batch.from_data_list(pad_kernels(graphs))
