"""Building blocks both graph layers use: a node MLP and an edge MLP."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.inits import reset


def mlp(d_in: int, d_out: int, d_hidden: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """Two-layer MLP with SiLU, the node-level building block: [*, d_in] -> [*, d_out].
    ``dropout`` > 0 drops hidden units while training (added only then, so that the parameter
    names of models without it stay)."""
    d_hidden = d_hidden or d_out
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), *drop, nn.Linear(d_hidden, d_out))


class EdgeMLP(nn.Module):
    """MLP([h_src, h_dst, e]) for every edge, computed without the [E, 3d] concat:
    the first layer is split into a source, a target and an edge part, and the
    node parts are projected once per node, then gathered (N << E).

    h [N, d_node], edge_index [2, E], e [E, d_edge] -> [E, d_out].
    """

    def __init__(self, d_node: int, d_edge: int, d_out: int, d_hidden: int | None = None):
        super().__init__()
        d_hidden = d_hidden or d_out
        self.src, self.dst = nn.Linear(d_node, d_hidden), nn.Linear(d_node, d_hidden, bias=False)
        self.edge = nn.Linear(d_edge, d_hidden, bias=False)
        self.out = nn.Linear(d_hidden, d_out)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> Tensor:
        ends = self.src(h).index_select(0, edge_index[0]) + self.dst(h).index_select(0, edge_index[1])
        return self.out(nn.functional.silu(torch.addmm(ends, e, self.edge.weight.t())))


class EdgeProduct(nn.Module):
    """A rank-``rank`` bilinear form of each edge's two end states, per output:
    out_ij = W_o [(U h_i) * (V h_j)]. An MLP of [h_i, h_j] adds a function of each end and
    mixes the two only through its nonlinearity; a weight edit is often a product of the
    two ends (with probe features a gradient step on a weight is the source's activations
    times the target's error, summed over the probes), which this term writes directly.
    Per edge, so a readout that adds it stays equivariant to relabelling neurons.

    h [N, d], edge_index [2, E] -> [E, d_out].
    """

    def __init__(self, d: int, rank: int, d_out: int):
        super().__init__()
        self.src, self.dst = nn.Linear(d, rank, bias=False), nn.Linear(d, rank, bias=False)
        self.out = nn.Linear(rank, d_out, bias=False)

    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        return self.out(self.src(h).index_select(0, edge_index[0]) * self.dst(h).index_select(0, edge_index[1]))


def reset_children(module: nn.Module) -> None:
    """Re-initialise every parameter below ``module`` (what a layer's ``reset_parameters`` does)."""
    for child in module.children():
        reset(child)
