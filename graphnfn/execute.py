"""Running the network a neuron graph encodes, on the graph itself.

For graphs of Linear and BatchNorm layers (MLPs, INRs) the forward pass is
message passing, depth by depth: neuron j gets ``act_j(sum_i W[j, i] h_i + b_j)``;
a BatchNorm node normalises its channel with its running statistics (eps 1e-5)
and scales and shifts it. Differentiable in the graph's features, so a model
that edits edge and node features can be trained through the edited network
(INR editing), and probe features are the network's real activations.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter

from .graph import ACT_COLS, NODE_COL, WEIGHT_COL, Activation, EdgeType, NodeType

#: every activation as a map of (pre-activations, its parameter broadcast with them)
ACTIVATION_FNS: dict[Activation, Callable[[Tensor, Tensor], Tensor]] = {
    Activation.RELU: lambda pre, p: torch.relu(pre),
    Activation.LEAKY_RELU: lambda pre, p: torch.where(pre >= 0, pre, pre * p),
    Activation.GELU: lambda pre, p: torch.where(p > 0, F.gelu(pre, approximate="tanh"), F.gelu(pre)),
    Activation.TANH: lambda pre, p: torch.tanh(pre),
    Activation.SIGMOID: lambda pre, p: torch.sigmoid(pre),
    Activation.SINE: lambda pre, p: torch.sin(p * pre),
    Activation.SILU: lambda pre, p: F.silu(pre),
    Activation.ELU: lambda pre, p: torch.where(pre > 0, pre, p * torch.expm1(pre.clamp(max=0))),
    Activation.SOFTPLUS: lambda pre, p: F.softplus(pre * p) / p.clamp(min=1e-12),
}
#: the parameter of an activation module built with its defaults (what the converters record
#: for it): leaky ReLU's slope, SIREN's w0 (:class:`graphnfn.Sine`), ELU's alpha, softplus' beta
DEFAULT_ACT_PARAM = {Activation.LEAKY_RELU: 0.01, Activation.SINE: 30.0, Activation.ELU: 1.0,
                     Activation.SOFTPLUS: 1.0}


def activate(pre: Tensor, x: Tensor) -> Tensor:
    """Each node's activation (by its one-hot in x [N, F_node]) applied to pre [N, P].
    Softmax, log-softmax and unknown activations count as identity."""
    onehot = x[:, ACT_COLS]
    param = x[:, NODE_COL["act_param"]].unsqueeze(1)
    out = pre * (1 - sum(onehot[:, int(k)] for k in ACTIVATION_FNS).unsqueeze(1))
    for kind, fn in ACTIVATION_FNS.items():
        out = out + onehot[:, int(kind)].unsqueeze(1) * fn(pre, param)
    return out


def run_graph(inputs: Tensor, x: Tensor, edge_index: Tensor, edge_attr: Tensor, node_type: Tensor,
              edge_type: Tensor, layer: Tensor, num_layers: int, output_activation: bool = False) -> Tensor:
    """Activations of every neuron on P inputs.

    Args:
        inputs: [P, n_inputs]; input neuron k of every graph reads column k.
        x, edge_index, edge_attr, node_type, edge_type, layer: the (batched) graph.
        num_layers: node layers of the deepest graph (``len(spec.node_groups)``).
        output_activation: apply the output neurons' activation too (default:
            their pre-activations, e.g. logits before a softmax).
    Returns:
        [N, P]. Graphs with conv or flatten edges are refused: their inputs are
        images, not vectors.
    """
    src, dst = edge_index
    batch_norm = (edge_type == EdgeType.NORM) & (node_type[dst] == NodeType.NORM)  # not LayerNorm
    torch._assert_async(((edge_type == EdgeType.LINEAR) | batch_norm).all(),
                        "run_graph needs graphs of Linear/BatchNorm layers (MLPs, INRs)")
    is_input = (node_type == NodeType.INPUT).unsqueeze(1)
    pos = x[:, NODE_COL["position"]].long()
    torch._assert_async((~is_input.squeeze(1) | (pos < inputs.size(1))).all(),
                        "run_graph: a graph has more input neurons than the inputs have columns")
    # masks, not boolean indexing: no host-device sync
    h = torch.where(is_input, inputs.T[pos.clamp(0, inputs.size(1) - 1)], 0)
    is_norm = (edge_type == EdgeType.NORM).unsqueeze(1)
    mean = x[dst, NODE_COL["running_mean"]].unsqueeze(1)
    std = torch.sqrt(x[dst, NODE_COL["running_var"]].unsqueeze(1) + 1e-5)
    acts = x
    if not output_activation:
        acts = x.clone()
        is_output = node_type == NodeType.OUTPUT
        acts[:, ACT_COLS] *= ~is_output.unsqueeze(1)
        acts[:, ACT_COLS.start] += is_output
    for depth in range(1, num_layers):
        h_src = torch.where(is_norm, (h[src] - mean) / std, h[src])
        msg = edge_attr[:, WEIGHT_COL].unsqueeze(1) * h_src * (layer[dst] == depth).unsqueeze(1)
        pre = scatter(msg, dst, 0, x.size(0), "sum") + x[:, NODE_COL["bias"]].unsqueeze(1)
        h = torch.where((layer == depth).unsqueeze(1), activate(pre, acts), h)
    return h


def run_mlp(inputs: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor],
            activations: Sequence[Callable[[Tensor], Tensor]]) -> list[Tensor]:
    """A batch of MLPs given as tensors on P inputs: the weight-space twin of :func:`run_graph`.

    Args:
        inputs: [P, n_0].
        weights: weights[l] [B, n_{l+1}, n_l]; biases: biases[l] [B, n_{l+1}].
        activations: one map per hidden neuron layer (applied after weights[l], l < len(activations)).
    Returns:
        [B, P, n_{l+1}] for every layer l: hidden neurons after their activation, outputs before.
    """
    h = inputs.expand(weights[0].size(0), *inputs.shape)
    out = []
    for l, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if l < len(activations):
            h = activations[l](h)
        out.append(h)
    return out
