"""Input features of graph models: raw NeuralGraph columns -> learned embeddings.

Every part is a config toggle of :class:`NodeEncoder` / :class:`EdgeEncoder`.
Hidden neurons get no positional embedding, so they stay interchangeable;
input, output and flatten nodes get learned embeddings of their ``position``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .graph import EDGE_META, NODE_COL, WEIGHT_COL, Activation, EdgeType, NodeType

#: Scalar node columns (everything but position and the activation one-hot).
NODE_SCALARS = ("bias", "running_mean", "running_var", "act_param", "pool_max", "pool_avg")
_ACT0 = NODE_COL["act_identity"]


class FourierFeatures(nn.Module):
    """Gaussian Fourier features of scalars (Tancik et al., 2020).

    s [*, C] -> [*, C * (1 + 2F)]: each scalar next to sin(2 pi b_k s) and
    cos(2 pi b_k s) for F fixed frequencies b_k ~ N(0, sigma^2). ``n_freq=0``
    passes the scalars through.
    """

    def __init__(self, n_freq: int = 16, sigma: float = 3.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freq", torch.randn(n_freq, generator=gen) * sigma * 2 * math.pi)

    @property
    def expansion(self) -> int:
        return 1 + 2 * self.freq.numel()

    def forward(self, s: Tensor) -> Tensor:
        angles = s.unsqueeze(-1) * self.freq.to(s.dtype)
        return torch.cat([s.unsqueeze(-1), angles.sin(), angles.cos()], -1).flatten(-2)


class ProbeFeatures(nn.Module):
    """The network's own activations on fixed probe inputs, per neuron.

    Runs the network encoded by a graph of Linear/BatchNorm layers on P probe
    inputs (``probes`` [P, n_inputs]; by default standard normal, for INRs pass
    a coordinate grid) by message passing, depth by depth: neuron j gets
    ``act_j(sum_i W[j, i] h_i + b_j)`` (BatchNorm nodes normalise with their
    running statistics, eps 1e-5). Returns [N, P]. Output-layer softmax and
    unknown activations count as identity. Graphs with conv or flatten edges
    are refused: their inputs are images, not vectors.
    """

    def __init__(self, n_probes: int = 16, n_inputs: int = 2, probes: Tensor | None = None, seed: int = 0):
        super().__init__()
        if probes is None:
            probes = torch.randn(n_probes, n_inputs, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("probes", probes)

    @property
    def n_probes(self) -> int:
        return self.probes.size(0)

    @staticmethod
    def activate(pre: Tensor, x: Tensor) -> Tensor:
        """Each node's activation (by its one-hot in x) applied to pre [N, P]."""
        onehot = x[:, _ACT0:_ACT0 + len(Activation)]
        param = x[:, NODE_COL["act_param"]].unsqueeze(1)
        candidates = {
            Activation.RELU: torch.relu(pre),
            Activation.LEAKY_RELU: torch.where(pre >= 0, pre, pre * param),
            Activation.GELU: nn.functional.gelu(pre),
            Activation.TANH: torch.tanh(pre),
            Activation.SIGMOID: torch.sigmoid(pre),
            Activation.SINE: torch.sin(param * pre),
            Activation.SILU: nn.functional.silu(pre),
            Activation.ELU: torch.where(pre > 0, pre, param * torch.expm1(pre.clamp(max=0))),
            Activation.SOFTPLUS: nn.functional.softplus(pre * param) / param.clamp(min=1e-12),
        }
        out = pre * (1 - sum(onehot[:, int(k)] for k in candidates).unsqueeze(1))
        for kind, value in candidates.items():
            out = out + onehot[:, int(kind)].unsqueeze(1) * value
        return out

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, node_type: Tensor, edge_type: Tensor,
                layer: Tensor, num_layers: int) -> Tensor:
        dense = (edge_type == EdgeType.LINEAR) | (edge_type == EdgeType.NORM)
        torch._assert_async(dense.all(), "probe features need graphs of Linear/BatchNorm layers (MLPs, INRs)")
        is_input = (node_type == NodeType.INPUT).unsqueeze(1)
        pos = x[:, NODE_COL["position"]].long()
        torch._assert_async((~is_input.squeeze(1) | (pos < self.probes.size(1))).all(),
                            "probe features: a graph has more inputs than the probes")
        # masks, not boolean indexing: no host-device sync
        h = torch.where(is_input, self.probes.to(x.dtype).T[pos.clamp(0, self.probes.size(1) - 1)], 0)
        src, dst = edge_index
        is_norm = (edge_type == EdgeType.NORM).unsqueeze(1)
        for depth in range(1, num_layers):
            # a norm edge scales the normalised input; a linear edge sums weighted inputs
            mean = x[dst, NODE_COL["running_mean"]].unsqueeze(1)
            var = x[dst, NODE_COL["running_var"]].unsqueeze(1)
            h_src = torch.where(is_norm, (h[src] - mean) / torch.sqrt(var + 1e-5), h[src])
            msg = edge_attr[:, WEIGHT_COL].unsqueeze(1) * h_src * (layer[dst] == depth).unsqueeze(1)
            pre = scatter(msg, dst, 0, x.size(0), "sum") + x[:, NODE_COL["bias"]].unsqueeze(1)
            at = (layer == depth).unsqueeze(1)
            act = self.activate(pre, torch.where(node_type.unsqueeze(1) == NodeType.OUTPUT, _identity_row(x), x))
            h = torch.where(at, act, h)
        return h


def _identity_row(x: Tensor) -> Tensor:
    """x with the activation one-hot set to identity (for output neurons)."""
    out = x.clone()
    out[:, _ACT0:_ACT0 + len(Activation)] = 0
    out[:, _ACT0] = 1
    return out


class NodeEncoder(nn.Module):
    """x [N, F_node] (+ node_type, layer) -> h [N, d].

    Sum of: a linear map of the scalar columns (Fourier-expanded if
    ``fourier > 0``) and the activation one-hot; a node-type embedding; learned
    position embeddings for input, output and flatten nodes (``positional``);
    a layer-depth embedding (``layer_embedding``); a linear map of probe
    activations (``probe``).
    """

    def __init__(self, d: int, fourier: int = 16, sigma: float = 3.0, positional: bool = True,
                 layer_embedding: bool = True, probe: ProbeFeatures | None = None, max_positions: int = 4096,
                 max_layers: int = 64):
        super().__init__()
        self.scalar_cols = [NODE_COL[c] for c in NODE_SCALARS]
        self.fourier = FourierFeatures(fourier, sigma)
        self.scalars = nn.Linear(len(self.scalar_cols) * self.fourier.expansion + len(Activation), d)
        self.node_type = nn.Embedding(len(NodeType), d)
        self.max_positions = max_positions
        self.positions = nn.ModuleDict({t.name: nn.Embedding(max_positions, d) for t in
                                        (NodeType.INPUT, NodeType.OUTPUT, NodeType.FLATTEN)}) if positional else None
        self.layer = nn.Embedding(max_layers, d) if layer_embedding else None
        self.probe = probe
        self.probe_proj = nn.Linear(probe.n_probes, d) if probe is not None else None

    def forward(self, x: Tensor, node_type: Tensor, layer: Tensor, probe_h: Tensor | None = None) -> Tensor:
        feats = torch.cat([self.fourier(x[:, self.scalar_cols]), x[:, _ACT0:_ACT0 + len(Activation)]], 1)
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
    """

    def __init__(self, d: int, fourier: int = 16, sigma: float = 3.0, max_kernel: int = 9):
        super().__init__()
        self.max_kernel = max_kernel
        self.fourier = FourierFeatures(fourier, sigma, seed=1)
        self.proj = nn.Linear(len(EDGE_META) + max_kernel * self.fourier.expansion, d)
        self.edge_type = nn.Embedding(len(EdgeType), d)

    def forward(self, edge_attr: Tensor, edge_type: Tensor) -> Tensor:
        kernel = edge_attr[:, WEIGHT_COL:]
        if kernel.size(1) > self.max_kernel:
            raise ValueError(f"kernels of {kernel.size(1)} values exceed max_kernel={self.max_kernel}")
        kernel = nn.functional.pad(kernel, (0, self.max_kernel - kernel.size(1)))
        feats = torch.cat([edge_attr[:, :WEIGHT_COL], self.fourier(kernel)], 1)
        return self.proj(feats) + self.edge_type(edge_type)
