"""Invariant and equivariant graph models on batches of NeuralGraphs."""
from __future__ import annotations


import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from .canonical import canonicalize
from .features import EdgeEncoder, NodeEncoder, ProbeFeatures
from .graph import NODE_COL, WEIGHT_COL, NeuralGraph
from .nn import EdgePNAConv, SparseRelationalAttention
from .nn.aggregate import scatter_max
from .nn.blocks import EdgeProduct, mlp
from .readouts import readout_name
from .statistics import TensorStatistics, kernel_mask

BACKBONES = ("pna", "transformer")
READOUTS = ("invariant", "node", "equivariant")  # the paramshare family's names, and per neuron


def node_layers(data: Data) -> int:
    """Node layers in the deepest graph, from the Python-side specs (no device sync)."""
    specs = data.spec if isinstance(data.spec, list) else [data.spec]
    return max(len(s.node_groups) for s in specs)


class GraphNFN(nn.Module):
    """A graph network on neuron graphs, invariant or equivariant to the
    permutations of hidden neurons.

    Args:
        d_out: output features per graph / node / edge.
        backbone: ``"pna"`` (:class:`graphnfn.nn.EdgePNAConv`) or ``"transformer"``
            (:class:`graphnfn.nn.SparseRelationalAttention`).
        readout: ``"invariant"`` -> [B, d_out] (mean and max of node and edge states
            per graph, or with ``pool="layer"`` per graph and layer depth: :func:`pool_graphs`);
            ``"equivariant"`` -> [E, d_out], one output per edge, i.e. per
            weight, as the parameter-sharing models' equivariant readout; ``"node"`` ->
            [N, d_out], one per neuron. With ``readout="equivariant"`` and ``d_out`` = the
            batch's kernel width, :func:`apply_edge_delta` adds the output to the weights.
            ``"graph"`` and ``"edge"`` are synonyms of ``"invariant"`` and ``"equivariant"``
            (:mod:`graphnfn.readouts`); ``self.readout`` holds the latter.
        d_hidden, n_layers, heads, dropout: size of the backbone.
        fourier: Gaussian Fourier frequencies per scalar feature (0: raw scalars);
            fourier_sigma: their scale.
        positional: learned embeddings of input/output/flatten positions.
        layer_embedding: learned embedding of the layer depth.
        probe: a :class:`graphnfn.features.ProbeFeatures` (MLP/INR graphs only) or None.
        pool, pool_depths: the invariant readout pools each graph's states as a whole
            (``"graph"``) or each layer depth apart (``"layer"``: the first ``pool_depths`` depths
            get a slot each, deeper ones share the last).
        symmetry: ``None``, ``"sign"`` or ``"scale"``: map each graph to its
            canonical form under sign flips of tanh/sine neurons or positive
            scalings of ReLU neurons first (see :mod:`graphnfn.canonical`).
        max_kernel: the widest kernel (values per edge) the model accepts.
        zero_output: start with the output layer (and the equivariant readout's bias
            head) at zero, so that ``edit()`` starts as the identity edit.
        edit_scale: ``edit()`` multiplies its deltas by learned per-depth scales starting at
            this value (:class:`EditScale`); None: unscaled.
        edge_chunk_values: edge features of more values than this (edges x
            features) are encoded a chunk of edges at a time under activation
            checkpointing (see :class:`graphnfn.features.EdgeEncoder`).
        recompute: transformer backbone: per-edge keys, values and queries computed again in
            backward instead of kept (:class:`graphnfn.nn.SparseRelationalAttention`; None:
            on large batches only). The same function, less memory.
        tensor_stats: the invariant readout also reads the ``stat`` baseline's features (mean,
            variance and quantiles of each weight and bias tensor:
            :class:`graphnfn.statistics.TensorStatistics`) of each graph's first ``tensor_stats``
            tensors, next to the pooled states (0: none); with ``symmetry``, of the canonical form.
        stats_fourier: those statistics are of each value's Gaussian Fourier features (this many
            frequencies, ``fourier_sigma``; 0: of the values), as ``stat`` reads them.
        edge_product: the equivariant readout adds a bilinear term of each edge's two end
            states of this rank (:class:`graphnfn.nn.blocks.EdgeProduct`); 0: none.
    """

    def __init__(self, d_out: int, backbone: str = "pna", readout: str = "invariant", d_hidden: int = 64,
                 n_layers: int = 4, heads: int = 4, dropout: float = 0.0, fourier: int = 16,
                 fourier_sigma: float = 3.0, positional: bool = True, layer_embedding: bool = True,
                 probe: ProbeFeatures | None = None, symmetry: str | None = None, max_kernel: int = 9,
                 max_positions: int = 1024, zero_output: bool = False, edit_scale: float | None = None,
                 edge_chunk_values: int = 2**24, pool: str = "graph", pool_depths: int = 8,
                 recompute: bool | None = None, tensor_stats: int = 0, stats_fourier: int = 0,
                 edge_product: int = 0):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        readout = readout_name(readout, READOUTS)
        if symmetry not in (None, "sign", "scale"):
            raise ValueError(f"symmetry must be None, 'sign' or 'scale', got {symmetry!r}")
        if tensor_stats and readout != "invariant":
            raise ValueError(f"tensor_stats feeds the invariant readout only, got readout={readout!r}")
        if edge_product and readout != "equivariant":
            raise ValueError(f"edge_product is a term of the equivariant readout only, got readout={readout!r}")
        self.backbone, self.readout, self.symmetry = backbone, readout, symmetry
        self.pooling = GraphPool(pool, pool_depths, tensor_stats, stats_fourier, fourier_sigma)
        self.nodes = NodeEncoder(d_hidden, fourier, fourier_sigma, positional, layer_embedding, probe, max_positions)
        self.edges = EdgeEncoder(d_hidden, fourier, fourier_sigma, max_kernel, edge_chunk_values)
        self.layers = nn.ModuleList(
            EdgePNAConv(d_hidden, dropout) if backbone == "pna" else
            SparseRelationalAttention(d_hidden, heads, dropout, recompute)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_hidden)
        d_read = {"invariant": self.pooling.width(d_hidden), "node": d_hidden,
                  "equivariant": 3 * d_hidden}[readout]
        self.head = mlp(d_read, d_out, 2 * d_hidden)
        # equivariant readout: a second head edits the biases (see edit())
        self.bias_head = mlp(d_hidden, 1, 2 * d_hidden) if readout == "equivariant" else None
        self.edge_product = EdgeProduct(d_hidden, edge_product, d_out) if edge_product else None
        if zero_output:
            outputs = [self.head[-1]]
            if self.bias_head is not None:
                outputs.append(self.bias_head[-1])
            if self.edge_product is not None:
                outputs.append(self.edge_product.out)
            for param in (p for layer in outputs for p in layer.parameters()):
                nn.init.zeros_(param)
        self.edit_scale = EditScale(edit_scale) if edit_scale and readout == "equivariant" else None

    def inputs(self, data: NeuralGraph | Batch) -> tuple[Tensor, Tensor]:
        """(x [N, F], edge_attr [E, WEIGHT_COL + K]) as the model reads them: in its dtype, and with
        ``symmetry`` in canonical form."""
        return read_inputs(data, self.norm.weight.dtype, self.symmetry)

    def encode(self, data: NeuralGraph | Batch,
               inputs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, int]:
        """Final node states h [N, d], edge states e [E, d], the node -> graph index [N], B.
        ``inputs``: ``self.inputs(data)`` where the caller has it already."""
        batch, num_graphs = graph_index(data)
        probe_h = self.probe_features(data) if self.nodes.probe is not None else None
        x, edge_attr = inputs if inputs is not None else self.inputs(data)
        h = self.nodes(x, data.node_type, data.layer, probe_h)
        e = self.edges(edge_attr, data.edge_type)
        for layer in self.layers:
            h, e = layer(h, data.edge_index, e, batch, num_graphs)
        return self.norm(h), e, batch, num_graphs

    def probe_features(self, data: NeuralGraph | Batch) -> Tensor:
        """[N, P]: every neuron's activation on the probe inputs, computed on the networks as
        converted: a batch scaled by :class:`graphnfn.training.WeightScaler` is unscaled first
        (its ``weight_scale`` / ``bias_scale``), since a rescaled network computes another
        function. With ``symmetry``, on the canonical form, so the features stay invariant."""
        return probe_activations(self.nodes.probe, data, self.norm.weight.dtype, self.symmetry)

    def forward(self, data: NeuralGraph | Batch) -> Tensor:
        """data: a NeuralGraph or a Batch of them (``graphnfn.collate`` or a PyG DataLoader)."""
        inputs = self.inputs(data)
        h, e, batch, num_graphs = self.encode(data, inputs)
        if self.readout == "node":
            return self.head(h)
        if self.readout == "equivariant":
            return self.edge_outputs(h, e, data.edge_index)
        return self.head(self.pooling(h, e, data, batch, num_graphs, inputs))

    def edge_outputs(self, h: Tensor, e: Tensor, edge_index: Tensor) -> Tensor:
        """The equivariant readout: [E, d_out] from the final node states h [N, d] and edge states e [E, d]."""
        src, dst = edge_index
        out = self.head(torch.cat([h.index_select(0, src), h.index_select(0, dst), e], -1))
        return out if self.edge_product is None else out + self.edge_product(h, edge_index)

    def edit(self, data: NeuralGraph | Batch) -> NeuralGraph | Batch:
        """The edited networks (``readout="equivariant"``): the edge head's [E, d_out]
        output added to the kernel values and a bias head's [N] output to the
        biases, via :func:`apply_edge_delta`; equivariant, differentiable."""
        if self.readout != "equivariant":
            raise ValueError("edit() needs a model built with readout='equivariant'")
        h, e, _, _ = self.encode(data)
        return apply_edge_delta(data, self.edge_outputs(h, e, data.edge_index), self.bias_head(h).squeeze(-1),
                                self.edit_scale)


def graph_index(data: NeuralGraph | Batch) -> tuple[Tensor, int]:
    """(batch [N]: each node's graph, B) of a Batch, or of one NeuralGraph (graph 0)."""
    batch = getattr(data, "batch", None)
    batch = batch if batch is not None else data.x.new_zeros(data.x.size(0), dtype=torch.long)
    return batch, data.num_graphs if isinstance(data, Batch) else 1


def read_inputs(data: NeuralGraph | Batch, dtype: torch.dtype, symmetry: str | None) -> tuple[Tensor, Tensor]:
    """(x [N, F], edge_attr [E, WEIGHT_COL + K]) of a batch in ``dtype``, and with ``symmetry``
    ("sign" / "scale") in canonical form (:func:`graphnfn.canonical.canonicalize`)."""
    x, edge_attr = data.x.to(dtype), data.edge_attr.to(dtype)
    if symmetry:
        x, edge_attr = canonicalize(x, data.edge_index, edge_attr, data.node_type, data.edge_type, data.layer,
                                    node_layers(data), symmetry)
    return x, edge_attr


def probe_activations(probe: ProbeFeatures, data: NeuralGraph | Batch, dtype: torch.dtype,
                      symmetry: str | None = None) -> Tensor:
    """[N, P]: every neuron's activation on ``probe``'s inputs, computed on the networks as
    converted (:func:`unscaled`: a rescaled network computes another function); with
    ``symmetry``, on their canonical form (:func:`graphnfn.canonical.canonicalize`)."""
    x, edge_attr = unscaled(data, dtype)
    num_layers = node_layers(data)
    if symmetry:
        x, edge_attr = canonicalize(x, data.edge_index, edge_attr, data.node_type, data.edge_type, data.layer,
                                    num_layers, symmetry)
    return probe(x, data.edge_index, edge_attr, data.node_type, data.edge_type, data.layer, num_layers)


def unscaled(data: NeuralGraph | Batch, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(x [N, F_node], edge_attr [E, 9 + K]) of the networks as converted, in ``dtype``: a batch
    scaled by :class:`graphnfn.training.WeightScaler` is multiplied back by its ``weight_scale``
    / ``bias_scale`` (what probe features need: a rescaled network computes another function)."""
    x, edge_attr = data.x.to(dtype), data.edge_attr.to(dtype)
    if getattr(data, "weight_scale", None) is not None:
        edge_attr = torch.cat([edge_attr[:, :WEIGHT_COL], edge_attr[:, WEIGHT_COL:] * data.weight_scale.unsqueeze(1)], 1)
        x = x.clone()
        x[:, NODE_COL["bias"]] = x[:, NODE_COL["bias"]] * data.bias_scale
    return x, edge_attr


POOLS = ("graph", "layer")


class GraphPool(nn.Module):
    """The invariant readout's pooling (no parameters): each graph whole (``pool="graph"``) or
    each of its first ``depths`` layer depths apart (``"layer"``; :func:`pool_graphs`); with
    ``tensor_stats`` > 0, followed by the per-tensor statistics of the inputs
    (:class:`graphnfn.statistics.TensorStatistics` of that many tensors, of the values' Fourier
    features with ``stats_fourier`` > 0).

    h [N, d], e [E, d] of a batch (and with statistics ``inputs``: the (x, edge_attr) the model
    read) -> [B, width(d)].
    """

    def __init__(self, pool: str = "graph", depths: int = 8, tensor_stats: int = 0, stats_fourier: int = 0,
                 stats_sigma: float = 3.0):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if depths < 1:
            raise ValueError(f"pool_depths must be >= 1, got {depths}")
        self.pool, self.depths = pool, depths
        self.stats = TensorStatistics(tensor_stats, stats_fourier, stats_sigma) if tensor_stats else None

    def width(self, d: int) -> int:
        """Features per graph of d-wide node and edge states."""
        return 4 * d * (self.depths if self.pool == "layer" else 1) + (self.stats.width if self.stats else 0)

    def forward(self, h: Tensor, e: Tensor, data: NeuralGraph | Batch, batch: Tensor, num_graphs: int,
                inputs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        pooled = pool_graphs(h, e, batch, data.edge_index, num_graphs,
                             data.layer if self.pool == "layer" else None, self.depths)
        if self.stats is None:
            return pooled
        return torch.cat([pooled, self.stats(data, *inputs, batch, num_graphs)], 1)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, depths={self.depths}"


def pool_graphs(h: Tensor, e: Tensor, batch: Tensor, edge_index: Tensor, num_graphs: int,
                layer: Tensor | None = None, depths: int = 1) -> Tensor:
    """The mean and the max of each graph's node and edge states: h [N, d], e [E, d'] ->
    [B, 2 d + 2 d'] (an edge belongs to the graph of its source).

    With ``layer`` [N] (node depths): per graph and depth, [B, depths (2 d + 2 d')], an edge
    counted at the depth of its target (the layer its weight feeds, as a weight tensor is
    pooled alone by NFN's invariant layer and by ``stat``); depths >= ``depths`` - 1 share the
    last slot, missing depths are 0. Depths are invariant under relabelling hidden neurons, so
    the result is too."""
    src, dst = edge_index
    if layer is None:
        node_key, edge_key, slots = batch, batch.index_select(0, src), num_graphs
    else:
        node_key = batch * depths + layer.clamp(max=depths - 1)
        edge_key = node_key.index_select(0, dst)
        slots = num_graphs * depths
    pooled = torch.cat([scatter(h, node_key, 0, slots, "mean"), scatter_max(h, node_key, slots),
                        scatter(e, edge_key, 0, slots, "mean"), scatter_max(e, edge_key, slots)], -1)
    return pooled.reshape(num_graphs, -1)


class EditScale(nn.Module):
    """Learned scales of an edit: one per layer depth for the weights (an edge counts at its
    target's depth, deeper layers share the last of ``depths``) and one per depth for the
    biases, all starting at ``init``. A small first edit keeps the edited network near its
    input (a SIREN's first layer multiplies weight deltas by w0 = 30), and each depth learns
    how far to move. A scalar per depth commutes with relabelling neurons and with sign flips.

    ``forward(data, delta [E, k], bias_delta [N])`` -> the scaled (delta, bias_delta)."""

    def __init__(self, init: float, depths: int = 64):
        super().__init__()
        self.weight = nn.Parameter(torch.full((depths,), float(init)))
        self.bias = nn.Parameter(torch.full((depths,), float(init)))

    def forward(self, data: NeuralGraph | Batch, delta: Tensor, bias_delta: Tensor) -> tuple[Tensor, Tensor]:
        layer = data.layer.clamp(max=self.weight.numel() - 1)
        return (delta * self.weight.index_select(0, layer.index_select(0, data.edge_index[1])).unsqueeze(1),
                bias_delta * self.bias.index_select(0, layer))


def apply_edge_delta(data: NeuralGraph | Batch, delta: Tensor, bias_delta: Tensor | None = None,
                     scale: EditScale | None = None) -> NeuralGraph | Batch:
    """A copy of ``data`` with ``delta`` [E, k] added to the kernel values of
    parameter edges (k <= kernel width; entries beyond each edge's true kernel
    size and parameter-free edges are left alone, so ``converters.from_graph``
    folds the result into the edited network) and ``bias_delta`` [N] to the biases,
    both first multiplied by ``scale``'s per-depth factors if given."""
    if scale is not None:
        delta, bias_delta = scale(data, delta, bias_delta)
    out = data.clone()
    k = delta.size(1)
    valid = kernel_mask(out.edge_attr, out.edge_group, k)
    out.edge_attr = out.edge_attr.clone()
    out.edge_attr[:, WEIGHT_COL:WEIGHT_COL + k] += torch.where(valid, delta.to(out.edge_attr.dtype), 0)
    if bias_delta is not None:
        out.x = out.x.clone()
        out.x[:, NODE_COL["bias"]] += bias_delta.to(out.x.dtype)
    return out
