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

import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage


class NodeType(IntEnum):
    """Role of a node. Only ``HIDDEN`` (and ``NORM``/``FLATTEN`` blocks with
    their channel) nodes are interchangeable; ``INPUT`` and ``OUTPUT`` nodes
    carry their index in the ``position`` feature."""

    INPUT = 0
    HIDDEN = 1
    OUTPUT = 2
    NORM = 3  # one node per normalised feature/channel (BatchNorm)
    FLATTEN = 4  # one node per (channel, spatial position) after Flatten
    LAYER_NORM = 5  # one node per feature of a LayerNorm (normalises across its layer)
    RESIDUAL = 6  # residual-stream node: the sum of its RESIDUAL (and embedding) in-edges
    QUERY = 7  # one per (head, dim) of the attention queries
    KEY = 8  # one per (head, dim) of the keys
    VALUE = 9  # one per (head, dim) of the values, mixed over tokens by their head
    HEAD = 10  # one per attention head: the softmax attention pattern of that head
    POSITION = 11  # one per position of a learned positional embedding (``position`` = index)
    CLASS_TOKEN = 12  # one per learned token prepended to the sequence (``position`` = index)
    RMS_NORM = 13  # one node per feature of an RMSNorm (scales by the root mean square of its layer)
    PRODUCT = 14  # the product of its two PRODUCT in-edges' sources (a gated MLP: act(gate) * up)
    KV_VALUE = 15  # grouped-query attention: x W_v + b_v per (key/value head, dim), shared by a query group


class EdgeType(IntEnum):
    """Kind of connection an edge stands for."""

    LINEAR = 0  # W[j, i] of nn.Linear
    CONV = 1  # kernel W[j, i] of nn.Conv1d / nn.Conv2d
    NORM = 2  # diagonal scale (BatchNorm / LayerNorm weight) from a feature to its norm node
    FLATTEN = 3  # identity from channel c to its (c, p) flatten node
    RESIDUAL = 4  # identity (weight 1) from an operand of a sum into the sum's node
    ATTN_Q = 5  # W_q[r, i]: residual-stream feature i -> query node r
    ATTN_K = 6  # W_k[r, i]
    ATTN_V = 7  # W_v[r, i]
    ATTN_O = 8  # W_o[j, r]: value node r -> output feature j
    QK_PAIR = 9  # query (h, d) -> key (h, d): the bilinear form; weight = the logit scale
    HEAD = 10  # query/key of head h -> head node h, head node h -> value of head h (weight 1)
    EMBED = 11  # nn.Embedding weight[v, d]: token v -> feature d
    POS_EMBED = 12  # positional embedding P[t, d]: position node t -> feature d
    CLASS_TOKEN = 13  # class token c[k, d]: class-token node k -> feature d
    ROTARY = 14  # rotary pair of one head, dim i -> dim j: rotated by angle (weight) * token position
    PRODUCT = 15  # operand -> PRODUCT node (weight 1)
    KV_SHARE = 16  # KV_VALUE (g, d) -> VALUE (h, d) of each query head h of group g (weight 1)


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
#: and output neurons, the spatial position for flatten nodes and the index of
#: position and class-token nodes, -1 where the node is interchangeable.
#: ``pool_max``/``pool_avg`` give the pooling window size (product of kernel
#: dims) applied after the node, or -P for adaptive pooling to P positions
#: (-1: global pooling, also over tokens).
#: ``causal`` is 1 on the head nodes of causally masked attention;
#: ``read_token`` is the token index k read after the node (``x[:, k]``, the
#: class-token readout), -1 where every token flows on.
NODE_FEATURES: tuple[str, ...] = (
    "bias",
    "running_mean",
    "running_var",
    "position",
    "act_param",
    "pool_max",
    "pool_avg",
) + tuple(f"act_{a.name.lower()}" for a in Activation) + (
    "causal",
    "read_token",
)

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
#: The activation one-hot columns of ``x`` (``x[:, ACT_COLS]`` is [N, len(Activation)]).
ACT_COLS = slice(NODE_COL["act_identity"], NODE_COL["act_identity"] + len(Activation))
#: Column of the first kernel value (the weight itself for a Linear edge).
WEIGHT_COL = len(EDGE_META)


@dataclass(frozen=True)
class ParamEntry:
    """Where one state_dict entry lives in the graph.

    kind ``"edge"``: the first ``kernel`` kernel columns of the edges whose
    ``edge_group`` is ``group``, each at row ``edge_slot`` of the tensor viewed
    as [numel / kernel, kernel].
    kind ``"node"``: column ``column`` of the nodes whose ``node_group`` is
    ``group`` (or one of the groups, for a packed q/k/v bias), indexed by
    ``neuron``. kind ``"const"``: ``value`` itself, a tensor kept as it is (an
    integer buffer such as ``num_batches_tracked``, an attention mask).
    """

    key: str
    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    group: int | tuple[int, ...] = -1
    column: int = -1
    value: Any = None
    kernel: int = 1


@dataclass(frozen=True, repr=False)
class GraphSpec:
    """Fold-back metadata of one graph: its state_dict entries in their original
    order and a name per node group (the module that owns those neurons)."""

    entries: tuple[ParamEntry, ...]
    node_groups: tuple[str, ...]
    edge_groups: tuple[str, ...]

    def __repr__(self) -> str:
        return f"GraphSpec({len(self.entries)} entries, {len(self.node_groups)} node groups)"


#: While PyG's collate concatenates ``edge_attr``, the first graph's width (see NeuralGraph.__inc__).
_collating = threading.local()


class NeuralGraph(Data):
    """A network as a graph. Information flows along ``edge_index[0] -> [1]``.

    Fields (N nodes, E edges):
        x          [N, len(NODE_FEATURES)]  node features (bias, stats, activation...)
        edge_index [2, E]                   source -> target neuron
        edge_attr  [E, WEIGHT_COL + K]      edge meta and kernel values (K = widest kernel)
        node_type  [N] long                 :class:`NodeType`
        edge_type  [E] long                 :class:`EdgeType`
        layer      [N] long                 depth: longest path from an input (QK_PAIR and ROTARY
                                            edges, which join nodes of one depth, excepted); 0 for inputs
    Bookkeeping for :func:`converters.from_graph` (not features):
        neuron     [N] long   index of the neuron in its parameter tensors
        node_group [N] long   index into ``spec.node_groups``
        edge_group [E] long   index into ``spec.edge_groups``, -1 for parameter-free edges
        edge_slot  [E] long   row of the edge's value in its parameter viewed as
                              [numel / kernel size, kernel size], -1 for parameter-free edges
        spec       :class:`GraphSpec`
    """

    # PyG's Batch.from_data_list (and so torch_geometric.loader.DataLoader) asks the first graph
    # for each key's cat dim, then every graph for its increment, then concatenates: it has no
    # hook to pad, so graphs of different kernel widths are refused here with the way out,
    # instead of torch.cat's "Sizes of tensors must match".
    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        _collating.width = value.size(-1) if key == "edge_attr" else None
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        width = getattr(_collating, "width", None)
        if key == "edge_attr" and args and width is not None and value.size(-1) != width:  # args: a store, i.e. collate
            raise ValueError(
                f"NeuralGraphs with different kernel widths ({width - WEIGHT_COL} and {value.size(-1) - WEIGHT_COL} "
                "kernel columns) do not batch as they are: batch them with graphnfn.collate(graphs) (or "
                "torch.utils.data.DataLoader(graphs, collate_fn=graphnfn.collate)), or pad them to one width "
                "first with graphnfn.pad_kernels(graphs)")
        return super().__inc__(key, value, *args, **kwargs)

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
        width = max([24] + [len(name) + 2 for name in self.spec.node_groups])
        lines = [
            f"NeuralGraph: {self.num_nodes} nodes, {self.num_edges} edges, "
            f"node features {self.x.size(1)}, edge features {self.edge_attr.size(1)} "
            f"({WEIGHT_COL} meta + {self.kernel_width} kernel), dtype {self.x.dtype}",
            f"{'layer':>5}  {'module':<{width}}{'node type':<12}{'nodes':>7}{'in-edges':>10}",
        ]
        in_edges = torch.bincount(self.node_group[self.edge_index[1]], minlength=len(self.spec.node_groups))
        for group, name in enumerate(self.spec.node_groups):
            mask = self.node_group == group
            if not bool(mask.any()):
                continue
            depth = int(self.layer[mask][0])
            ntype = NodeType(int(self.node_type[mask][0])).name.lower()
            edges = int(in_edges[group])
            lines.append(f"{depth:>5}  {name:<{width}}{ntype:<12}{int(mask.sum()):>7}{edges:>10}")
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


# torch.load(path, weights_only=True) may rebuild a saved NeuralGraph: its classes and the PyG
# storage classes it holds are plain data (no code runs on loading them)
torch.serialization.add_safe_globals([NeuralGraph, GraphSpec, ParamEntry, DataEdgeAttr, DataTensorAttr, GlobalStorage])


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
