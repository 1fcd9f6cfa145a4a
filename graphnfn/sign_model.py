"""A graph model invariant (or equivariant) to the sign flips of odd neurons by construction.

:class:`SignGNN` reads the same NeuralGraph batches as :class:`graphnfn.models.GraphNFN`; its
layers are :class:`graphnfn.nn.SignEquivariantConv` (the derivation is in
:mod:`graphnfn.nn.sign`). The sign group acts on the hidden neurons that
:func:`graphnfn.canonical.eligible` picks for odd activations (sine, tanh): those whose every
edge is a Linear/Conv weight and that are not max-pooled. Unlike ``GraphNFN(symmetry="sign")``,
which maps each network to a canonical representative (the sign that makes each bias
positive: discontinuous where a bias crosses 0), nothing is canonicalised: every function of
the model is equivariant, and near-zero biases are no special case.

Inputs that flip with s_j are encoded by odd features only (the value and its Gaussian
Fourier sines, no cosines); everything the group leaves alone (node and edge types, layer
depth, positions of inputs and outputs, kernel sizes) by an ordinary embedding v, which
multiplies the odd part: h_j = O(b_j) * (1 + v_j), plus v_j itself where the group does not
act. Probe activations of odd neurons are odd in s_j, so they join the odd part.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from .canonical import SIGN_ACTIVATIONS, eligible
from .features import NodeEncoder, ProbeFeatures
from .fourier import BIAS_SEED, WEIGHT_SEED, FourierFeatures
from .graph import EDGE_META, NODE_COL, WEIGHT_COL, EdgeType, NeuralGraph
from .models import READOUTS, EditScale, GraphPool, apply_edge_delta, graph_index, probe_activations, read_inputs
from .nn.blocks import mlp
from .nn.sign import ParityMLP, SignEquivariantConv, SignRMSNorm, acted_edges
from .readouts import readout_name


def acted_nodes(data: NeuralGraph | Batch) -> Tensor:
    """[N] bool: the neurons the sign group acts on (odd activation, only Linear/Conv edges, no
    max pooling)."""
    return eligible(data.x, data.edge_index, data.edge_type, data.node_type, SIGN_ACTIVATIONS, no_max_pool=True)


def unsigned(x: Tensor, edge_attr: Tensor, edge_index: Tensor, acted: Tensor) -> tuple[Tensor, Tensor]:
    """(x [N, F], edge_attr [E, WEIGHT_COL + K]) with the biases of the ``acted`` [N] neurons and
    the kernel values of the edges they touch made absolute: the parts a sign flip negates, so
    that any function of the result is sign invariant."""
    col = NODE_COL["bias"]
    x = torch.cat([x[:, :col], torch.where(acted, x[:, col].abs(), x[:, col]).unsqueeze(1), x[:, col + 1:]], 1)
    kernel = edge_attr[:, WEIGHT_COL:]
    kernel = torch.where(acted_edges(acted, edge_index).unsqueeze(1), kernel.abs(), kernel)
    return x, torch.cat([edge_attr[:, :WEIGHT_COL], kernel], 1)


class SignEncoder(nn.Module):
    """Node and edge inputs -> (h [N, d], e [E, d]) that transform like the layers' states.

    Odd part: [b_j, sin(2 pi f_k b_j)] (and probe activations) for nodes, the same of every
    kernel value for edges, each by a linear map without bias. Invariant part v: a
    :class:`graphnfn.features.NodeEncoder` of the node with its bias zeroed; for edges the
    kernel size / stride columns and an edge-type embedding.
    """

    def __init__(self, d: int, fourier: int, sigma: float, positional: bool, layer_embedding: bool,
                 probe: ProbeFeatures | None, max_kernel: int, max_positions: int):
        super().__init__()
        self.max_kernel = max_kernel
        self.node_fourier = FourierFeatures(fourier, sigma, seed=BIAS_SEED, odd=True)
        self.edge_fourier = FourierFeatures(fourier, sigma, seed=WEIGHT_SEED, odd=True)
        n_probes = probe.n_probes if probe is not None else 0
        self.node_odd = nn.Linear(self.node_fourier.expansion + n_probes, d, bias=False)
        self.edge_odd = nn.Linear(max_kernel * self.edge_fourier.expansion, d, bias=False)
        self.node_invariant = NodeEncoder(d, fourier, sigma, positional, layer_embedding, None, max_positions)
        self.edge_meta = nn.Linear(len(EDGE_META), d)
        self.edge_type = nn.Embedding(len(EdgeType), d)

    def forward(self, data: NeuralGraph | Batch, x: Tensor, edge_attr: Tensor, acted: Tensor,
                probe_h: Tensor | None) -> tuple[Tensor, Tensor]:
        bias = x[:, NODE_COL["bias"]:NODE_COL["bias"] + 1]
        odd = self.node_fourier(bias) if probe_h is None else torch.cat([self.node_fourier(bias), probe_h], 1)
        v = self.node_invariant(torch.cat([x[:, :NODE_COL["bias"]], torch.zeros_like(bias),
                                           x[:, NODE_COL["bias"] + 1:]], 1), data.node_type, data.layer)
        h = self.node_odd(odd) * (1 + v) + torch.where(acted.unsqueeze(1), 0, v)
        kernel = edge_attr[:, WEIGHT_COL:]
        if kernel.size(1) > self.max_kernel:
            raise ValueError(f"kernels of {kernel.size(1)} values exceed max_kernel={self.max_kernel}")
        n_feats = kernel.size(1) * self.edge_fourier.expansion  # zero padding has zero odd features: not needed
        odd_e = nn.functional.linear(self.edge_fourier(kernel), self.edge_odd.weight[:, :n_feats])
        v_e = self.edge_meta(edge_attr[:, :WEIGHT_COL]) + self.edge_type(data.edge_type)
        e = odd_e * (1 + v_e) + torch.where(acted_edges(acted, data.edge_index).unsqueeze(1), 0, v_e)
        return h, e


class SignGNN(nn.Module):
    """A graph network on neuron graphs, equivariant to permutations of hidden neurons and to
    the sign flips of odd hidden neurons (sine, tanh) by construction.

    Args:
        d_out: output features per graph / node / edge.
        readout: ``"invariant"`` -> [B, d_out]: the mean and max over each graph of an even
            (sign-invariant) :class:`graphnfn.nn.sign.ParityMLP` of the node and edge states;
            with ``pool="layer"`` per graph and layer depth (:func:`graphnfn.models.pool_graphs`);
            ``"node"`` -> [N, d_out] and ``"equivariant"`` -> [E, d_out], odd in the neuron's
            (the weight's) signs, so that :meth:`edit` moves with the network.
        d_hidden, n_layers, dropout: size of the backbone (:class:`graphnfn.nn.SignEquivariantConv`).
        fourier, fourier_sigma: Gaussian Fourier frequencies of every weight and bias (sines
            only: odd features) and their scale.
        positional, layer_embedding, max_positions: the invariant node embedding's parts
            (:class:`graphnfn.features.NodeEncoder`).
        probe: a :class:`graphnfn.features.ProbeFeatures` (MLP/INR graphs) or None.
        max_kernel: the widest kernel (values per edge) the model accepts.
        zero_output: start the output layers at zero (``edit()`` starts as the identity edit).
        edit_scale: as :class:`graphnfn.models.GraphNFN`'s.
        pool, pool_depths: as :class:`graphnfn.models.GraphNFN`'s.
        tensor_stats: as :class:`graphnfn.models.GraphNFN`'s, of the absolute values of the
            weights and biases the sign group reaches (:func:`unsigned`), so they stay invariant.
        stats_fourier: as :class:`graphnfn.models.GraphNFN`'s.
        symmetry: ``None`` or ``"sign"`` (the same model: it is sign equivariant by construction),
            or ``"scale"``: first map each graph to its canonical form under positive scalings of
            ReLU neurons (:func:`graphnfn.canonical.canonicalize`), so the model is also
            invariant to those. Odd and ReLU neurons are disjoint, so the two groups combine.
    """

    def __init__(self, d_out: int, readout: str = "invariant", d_hidden: int = 64, n_layers: int = 4,
                 dropout: float = 0.0, fourier: int = 16, fourier_sigma: float = 3.0, positional: bool = True,
                 layer_embedding: bool = True, probe: ProbeFeatures | None = None, max_kernel: int = 9,
                 max_positions: int = 1024, zero_output: bool = False, edit_scale: float | None = None,
                 pool: str = "graph", pool_depths: int = 8, tensor_stats: int = 0, stats_fourier: int = 0,
                 symmetry: str | None = None):
        super().__init__()
        readout = readout_name(readout, READOUTS)
        if symmetry not in (None, "sign", "scale"):
            raise ValueError(f"symmetry must be None, 'sign' or 'scale', got {symmetry!r}")
        # sign flips are built into the layers; only the scale group needs a canonical form
        self.canonical = "scale" if symmetry == "scale" else None
        if tensor_stats and readout != "invariant":
            raise ValueError(f"tensor_stats feeds the invariant readout only, got readout={readout!r}")
        self.readout, self.probe = readout, probe
        self.pooling = GraphPool(pool, pool_depths, tensor_stats, stats_fourier, fourier_sigma)
        self.encoder = SignEncoder(d_hidden, fourier, fourier_sigma, positional, layer_embedding, probe, max_kernel,
                                   max_positions)
        self.layers = nn.ModuleList(SignEquivariantConv(d_hidden, dropout) for _ in range(n_layers))
        self.norm = SignRMSNorm(d_hidden)
        if readout == "invariant":
            self.invariants = ParityMLP(d_hidden, d_hidden, 2 * d_hidden, parity=1)
            self.edge_invariants = ParityMLP(d_hidden, d_hidden, 2 * d_hidden, parity=1)
            self.head = mlp(self.pooling.width(d_hidden), d_out, 2 * d_hidden)
        else:
            d_read = d_hidden if readout == "node" else 2 * d_hidden
            self.head = ParityMLP(d_read, d_out, 2 * d_hidden, parity=-1)
        self.bias_head = ParityMLP(d_hidden, 1, 2 * d_hidden, parity=-1) if readout == "equivariant" else None
        if zero_output:
            for head in filter(None, (self.head, self.bias_head)):
                last = head[-1] if isinstance(head, nn.Sequential) else head.out
                for param in last.parameters():
                    nn.init.zeros_(param)
        self.edit_scale = EditScale(edit_scale) if edit_scale and readout == "equivariant" else None

    def inputs(self, data: NeuralGraph | Batch) -> tuple[Tensor, Tensor]:
        """(x [N, F], edge_attr [E, WEIGHT_COL + K]) as the model reads them: in its dtype, and with
        ``symmetry="scale"`` in canonical form."""
        return read_inputs(data, self.norm.weight.dtype, self.canonical)

    def encode(self, data: NeuralGraph | Batch,
               inputs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, int, Tensor]:
        """Final node states h [N, d], edge states e [E, d], the node -> graph index [N], B, and
        the acted-on nodes [N] bool. ``inputs``: ``self.inputs(data)`` where the caller has it."""
        dtype = self.norm.weight.dtype
        x, edge_attr = inputs if inputs is not None else self.inputs(data)
        batch, num_graphs = graph_index(data)
        acted = acted_nodes(data)
        probe_h = probe_activations(self.probe, data, dtype, self.canonical) if self.probe is not None else None
        h, e = self.encoder(data, x, edge_attr, acted, probe_h)
        for layer in self.layers:
            h, e = layer(h, data.edge_index, e, batch, num_graphs, acted)
        return self.norm(h), e, batch, num_graphs, acted

    def _edge_outputs(self, h: Tensor, e: Tensor, acted: Tensor, edge_index: Tensor) -> Tensor:
        """[E, d_out]: the equivariant head (odd) on each edge's state next to the product of its
        ends' states (which flips with s_i s_j, like the weight)."""
        pair = h.index_select(0, edge_index[0]) * h.index_select(0, edge_index[1])
        return self.head(torch.cat([e, pair], -1), acted_edges(acted, edge_index))

    def forward(self, data: NeuralGraph | Batch) -> Tensor:
        """data: a NeuralGraph or a Batch of them (``graphnfn.collate`` or a PyG DataLoader)."""
        inputs = self.inputs(data)
        h, e, batch, num_graphs, acted = self.encode(data, inputs)
        if self.readout == "node":
            return self.head(h, acted)
        if self.readout == "equivariant":
            return self._edge_outputs(h, e, acted, data.edge_index)
        invariants = self.invariants(h, acted), self.edge_invariants(e, acted_edges(acted, data.edge_index))
        stats_of = unsigned(*inputs, data.edge_index, acted) if self.pooling.stats is not None else None
        return self.head(self.pooling(*invariants, data, batch, num_graphs, stats_of))

    def edit(self, data: NeuralGraph | Batch) -> NeuralGraph | Batch:
        """The edited networks (``readout="equivariant"``): the edge head's [E, d_out] output
        added to the kernel values and the bias head's [N] to the biases
        (:func:`graphnfn.models.apply_edge_delta`); equivariant, differentiable."""
        if self.readout != "equivariant":
            raise ValueError("edit() needs a model built with readout='equivariant'")
        h, e, _, _, acted = self.encode(data)
        return apply_edge_delta(data, self._edge_outputs(h, e, acted, data.edge_index),
                                self.bias_head(h, acted).squeeze(-1), self.edit_scale)
