"""Input features of graph models: raw NeuralGraph columns -> learned embeddings.

Every part is a config toggle of :class:`NodeEncoder` / :class:`EdgeEncoder`.
Hidden neurons get no positional embedding, so they stay interchangeable;
input, output and flatten nodes get learned embeddings of their ``position``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .execute import run_graph
from .fourier import BIAS_SEED, WEIGHT_SEED, FourierFeatures
from .graph import ACT_COLS, EDGE_META, NODE_COL, WEIGHT_COL, Activation, EdgeType, NodeType

#: Scalar node columns (everything but position and the activation one-hot).
NODE_SCALARS = ("bias", "running_mean", "running_var", "act_param", "pool_max", "pool_avg", "causal", "read_token")
#: Node types whose ``position`` tells them apart (everything else is interchangeable).
POSITIONED = (NodeType.INPUT, NodeType.OUTPUT, NodeType.FLATTEN, NodeType.POSITION, NodeType.CLASS_TOKEN)


class ProbeFeatures(nn.Module):
    """The network's own activations on fixed probe inputs, per neuron: [N, P].

    ``probes`` [P, n_inputs]: by default standard normal; for INRs pass a
    coordinate grid. Computed from the graph itself by
    :func:`graphnfn.execute.run_graph` (MLP and INR graphs).
    """

    def __init__(self, n_probes: int = 16, n_inputs: int = 2, probes: Tensor | None = None, seed: int = 0):
        super().__init__()
        if probes is None:
            probes = torch.randn(n_probes, n_inputs, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("probes", probes)

    @property
    def n_probes(self) -> int:
        return self.probes.size(0)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, node_type: Tensor, edge_type: Tensor,
                layer: Tensor, num_layers: int) -> Tensor:
        return run_graph(self.probes.to(x.dtype), x, edge_index, edge_attr, node_type, edge_type, layer, num_layers)


class NodeEncoder(nn.Module):
    """x [N, F_node] (+ node_type, layer) -> h [N, d].

    Sum of: a linear map of the scalar columns (Fourier-expanded if
    ``fourier > 0``) and the activation one-hot; a node-type embedding; learned
    position embeddings for input, output, flatten, positional-embedding and
    class-token nodes (``positional``, a table per node type);
    a layer-depth embedding (``layer_embedding``); a linear map of probe
    activations (``probe``).
    """

    def __init__(self, d: int, fourier: int = 16, sigma: float = 3.0, positional: bool = True,
                 layer_embedding: bool = True, probe: ProbeFeatures | None = None, max_positions: int = 1024,
                 max_layers: int = 64):
        super().__init__()
        # a buffer, not a list: indexing a CUDA tensor with a list copies the list to the device
        # from pageable memory, which blocks the host
        self.register_buffer("scalar_cols", torch.tensor([NODE_COL[c] for c in NODE_SCALARS]), persistent=False)
        self.fourier = FourierFeatures(fourier, sigma, seed=BIAS_SEED)
        self.scalars = nn.Linear(len(NODE_SCALARS) * self.fourier.expansion + len(Activation), d)
        self.node_type = nn.Embedding(len(NodeType), d)
        self.max_positions = max_positions
        self.positions = nn.ModuleDict({t.name: nn.Embedding(max_positions, d) for t in POSITIONED}) if positional else None
        self.layer = nn.Embedding(max_layers, d) if layer_embedding else None
        self.probe = probe
        self.probe_proj = nn.Linear(probe.n_probes, d) if probe is not None else None

    def forward(self, x: Tensor, node_type: Tensor, layer: Tensor, probe_h: Tensor | None = None) -> Tensor:
        feats = torch.cat([self.fourier(x.index_select(1, self.scalar_cols)), x[:, ACT_COLS]], 1)
        h = self.scalars(feats) + self.node_type(node_type)
        if self.positions is not None:
            pos = x[:, NODE_COL["position"]].long()
            torch._assert_async((pos < self.max_positions).all(), f"a node position is >= max_positions={self.max_positions}")
            pos = pos.clamp(min=0, max=self.max_positions - 1)
            for name, table in self.positions.items():
                h = h + (node_type == NodeType[name]).unsqueeze(1) * table(pos)
        if self.layer is not None:
            torch._assert_async((layer < self.layer.num_embeddings).all(), "a graph is deeper than max_layers")
            h = h + self.layer(layer.clamp(max=self.layer.num_embeddings - 1))
        if probe_h is not None:
            h = h + self.probe_proj(probe_h)
        return h


class EdgeEncoder(nn.Module):
    """edge_attr [E, 9 + K] (+ edge_type) -> e [E, d].

    The meta columns (kernel size, stride, ...) linearly, the K kernel values
    Fourier-expanded (``fourier > 0``) and zero-padded to ``max_kernel``, plus
    an edge-type embedding.

    The padding is never materialised: the batch's K columns are expanded and
    projected, and the projection of the ``max_kernel - K`` zero columns, the
    same for every edge, is added as a constant (same result; a SIREN batch,
    K = 1, expands 1 column instead of 9).

    The expanded features are E x (9 + K (1 + 2 fourier)) values, far more
    than the [E, d] result (ResNet-18: 1.9M edges x 1,626 features with 7x7
    kernels, 12 GB in float32). When they would exceed ``chunk_values`` values,
    the edges are encoded a chunk at a time under activation checkpointing: each
    chunk's features exist only while it is computed, in the forward pass and
    again in the backward pass, so memory grows with E x d.
    """

    def __init__(self, d: int, fourier: int = 16, sigma: float = 3.0, max_kernel: int = 9, chunk_values: int = 2**24):
        super().__init__()
        self.max_kernel, self.chunk_values = max_kernel, chunk_values
        self.fourier = FourierFeatures(fourier, sigma, seed=WEIGHT_SEED)
        self.proj = nn.Linear(len(EDGE_META) + max_kernel * self.fourier.expansion, d)
        self.edge_type = nn.Embedding(len(EdgeType), d)

    def forward(self, edge_attr: Tensor, edge_type: Tensor) -> Tensor:
        width = edge_attr.size(1) - WEIGHT_COL
        if width > self.max_kernel:
            raise ValueError(f"kernels of {width} values exceed max_kernel={self.max_kernel}")
        n_feats = WEIGHT_COL + width * self.fourier.expansion
        # channel c's features are columns WEIGHT_COL + c * expansion + k of proj: the first n_feats are the batch's
        weight, padded = self.proj.weight[:, :n_feats], self.proj.weight[:, n_feats:]
        zeros = self.fourier(edge_attr.new_zeros(1, self.max_kernel - width))  # [1, (max_kernel - K) expansion]
        bias = self.proj.bias + nn.functional.linear(zeros, padded).squeeze(0)
        chunk = max(1, self.chunk_values // n_feats)  # edges
        if edge_attr.size(0) <= chunk:
            return self._encode(edge_attr, edge_type, weight, bias)
        return torch.cat([checkpoint(self._encode, attr, types, weight, bias, use_reentrant=False)
                          for attr, types in zip(edge_attr.split(chunk), edge_type.split(chunk))])

    def _encode(self, edge_attr: Tensor, edge_type: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """The projection of [meta, Fourier features of the K kernel values] (``weight`` [d, 9 + K
        expansion]) as one matmul per kind of feature, without concatenating the features."""
        kernel = edge_attr[:, WEIGHT_COL:]
        per_value = weight[:, WEIGHT_COL:].unflatten(1, (kernel.size(1), self.fourier.expansion))
        out = torch.addmm(bias, edge_attr[:, :WEIGHT_COL], weight[:, :WEIGHT_COL].t())
        start = 0
        for term in self.fourier.terms(kernel):  # [E, K, n]: value, sines, cosines
            n = term.size(-1)
            out = torch.addmm(out, term.flatten(1), per_value[:, :, start:start + n].flatten(1).t())
            start += n
        return out + self.edge_type(edge_type)
