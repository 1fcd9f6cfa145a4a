"""Canonical forms of a network under its hidden neurons' sign and scale symmetries.

A hidden neuron j whose activation is odd (tanh, sine) can flip sign: negate its
incoming weights, its bias and its outgoing weights, and the function is the
same. One whose activation is positively homogeneous (ReLU, LeakyReLU) can be
scaled: incoming weights and bias times a > 0, outgoing weights divided by a.
Graph models are made invariant to these groups by mapping every graph to one
representative before encoding it:

* ``"sign"``: s_j = -1 where b_j < 0, else +1 (exact for non-zero biases).
* ``"scale"``: depth by depth, a_j = 1 / ||(W[j, :] / a_in, b_j)||, so every
  such neuron's incoming weights and bias have unit norm.

Then an edge i -> j carries W[j, i] * f_j / f_i and node j the bias b_j * f_j.
Only ``HIDDEN`` neurons all of whose edges (in and out) are Linear/Conv edges
are transformed (max pooling also rules out sign flips): elsewhere (a
BatchNorm, Flatten, residual sum or attention next to the neuron) the group
does not act, so those neurons keep factor 1.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from .graph import ACT_COLS, NODE_COL, WEIGHT_COL, Activation, EdgeType, NodeType

SIGN_ACTIVATIONS = (Activation.TANH, Activation.SINE)
SCALE_ACTIVATIONS = (Activation.RELU, Activation.LEAKY_RELU)


def eligible(x: Tensor, edge_index: Tensor, edge_type: Tensor, node_type: Tensor, acts, no_max_pool: bool) -> Tensor:
    """[N] bool: hidden neurons with one of ``acts`` whose every edge is a Linear/Conv weight
    (and, with ``no_max_pool``, no max pooling): those the sign / scale group acts on."""
    other = (~((edge_type == EdgeType.LINEAR) | (edge_type == EdgeType.CONV))).to(x.dtype)
    # the group acts on a neuron only if every edge into and out of it is a Linear/Conv weight
    touched = scatter(other, edge_index[0], 0, x.size(0), "sum") + scatter(other, edge_index[1], 0, x.size(0), "sum")
    ok = (node_type == NodeType.HIDDEN) & (touched == 0)
    ok = ok & (sum(x[:, ACT_COLS.start + int(a)] for a in acts) > 0)
    if no_max_pool:
        ok = ok & (x[:, NODE_COL["pool_max"]] == 0)
    return ok


def canonicalize(x: Tensor, edge_index: Tensor, edge_attr: Tensor, node_type: Tensor, edge_type: Tensor,
                 layer: Tensor, num_layers: int, mode: str) -> tuple[Tensor, Tensor]:
    """(x, edge_attr) of the canonical representative; ``mode``: "sign" or "scale".

    Shapes: x [N, F_node], edge_attr [E, 9 + K]; ``num_layers`` bounds ``layer``.
    """
    src, dst = edge_index
    dense = ((edge_type == EdgeType.LINEAR) | (edge_type == EdgeType.CONV)).unsqueeze(1)
    bias = x[:, NODE_COL["bias"]]
    if mode == "sign":
        ok = eligible(x, edge_index, edge_type, node_type, SIGN_ACTIVATIONS, no_max_pool=True)
        factor = torch.where(ok & (bias < 0), -1.0, 1.0).to(x.dtype)
    elif mode == "scale":
        ok = eligible(x, edge_index, edge_type, node_type, SCALE_ACTIVATIONS, no_max_pool=False)
        factor = torch.ones_like(bias)
        kernel = edge_attr[:, WEIGHT_COL:]
        for depth in range(1, num_layers):
            incoming = torch.where(dense & (layer[dst] == depth).unsqueeze(1), kernel / factor[src].unsqueeze(1), 0)
            norm2 = scatter(incoming.square().sum(1), dst, 0, x.size(0), "sum") + bias.square()
            new = torch.rsqrt(norm2.clamp(min=torch.finfo(x.dtype).tiny))
            factor = torch.where(ok & (layer == depth), new, factor)
    else:
        raise ValueError(f"unknown symmetry mode {mode!r}: expected 'sign' or 'scale'")
    x = x.clone()
    x[:, NODE_COL["bias"]] = bias * factor
    edge_attr = edge_attr.clone()
    ratio = torch.where(dense.squeeze(1), factor[dst] / factor[src], 1.0).unsqueeze(1)
    edge_attr[:, WEIGHT_COL:] = edge_attr[:, WEIGHT_COL:] * ratio
    return x, edge_attr
