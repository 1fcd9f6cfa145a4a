"""Edge-aware PNA message passing on neuron graphs."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree, scatter


def mlp(d_in: int, d_out: int, d_hidden: int | None = None) -> nn.Sequential:
    """Two-layer MLP with SiLU, the node-level building block."""
    d_hidden = d_hidden or d_out
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


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
        z = self.src(h)[edge_index[0]] + self.dst(h)[edge_index[1]] + self.edge(e)
        return self.out(nn.functional.silu(z))


class PNARelation(MessagePassing):
    """One relation (forward or backward along the network's connections) of
    :class:`EdgePNAConv`: FiLM-modulated messages, four aggregators, three
    degree scalers.

    message:   m_ij = SiLU(A h_i + B h_j + C e_ij) * (1 + gamma(e_ij)) + beta(e_ij)    [E, d]
    aggregate: [mean, max, min, std] of m_ij over j, each times
               [1, log(deg+1) / delta, delta / log(deg+1)]                              [N, 12 d]
    where delta is the mean of log(deg+1) over the receiving node's graph, so a
    graph's output does not depend on what else is in its batch. A and B act on
    nodes before the gather, so the only per-edge matmul is the edge's (C, gamma, beta).
    """

    def __init__(self, d: int):
        super().__init__(aggr=None)
        self.target, self.source = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.edge = nn.Linear(d, 3 * d)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """h [N, d], edge_index [2, E] (messages j=edge_index[0] -> i=edge_index[1]),
        e [E, d], batch [N] -> [N, 12 d]."""
        return self.propagate(edge_index, a=self.target(h), b=self.source(h), e=e, batch=batch, num_graphs=num_graphs)

    def message(self, a_i: Tensor, b_j: Tensor, e: Tensor) -> Tensor:
        c, gamma, beta = self.edge(e).chunk(3, dim=-1)
        return nn.functional.silu(a_i + b_j + c) * (1 + gamma) + beta

    def aggregate(self, inputs: Tensor, index: Tensor, dim_size: int, batch: Tensor, num_graphs: int) -> Tensor:
        mean = scatter(inputs, index, 0, dim_size, "mean")
        sq = scatter(inputs * inputs, index, 0, dim_size, "mean")
        std = torch.sqrt(torch.relu(sq - mean * mean) + 1e-5)
        aggs = torch.cat([mean, scatter(inputs, index, 0, dim_size, "max"),
                          scatter(inputs, index, 0, dim_size, "min"), std], -1)
        log_deg = torch.log1p(degree(index, dim_size, dtype=inputs.dtype)).unsqueeze(-1)
        delta = scatter(log_deg, batch, 0, num_graphs, "mean")[batch].clamp(min=1e-2)
        return torch.cat([aggs, aggs * (log_deg / delta), aggs * (delta / log_deg.clamp(min=1e-2))], -1)


class EdgePNAConv(nn.Module):
    """Edge-aware PNA layer over both directions of a neuron graph.

    h_i' = h_i + U([LN(h_i), A_fwd(i), A_bwd(i)])        A: :class:`PNARelation`
    e_ij' = e_ij + V([LN(h_i'), LN(h_j'), LN(e_ij)])     (edge update, :class:`EdgeMLP`)

    Forward messages flow along the network's connections (input -> output),
    backward ones against them: a weight's meaning depends on both its ends.
    Shapes: h [N, d], edge_index [2, E], e [E, d], batch [N] -> (h' [N, d], e' [E, d]).
    """

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.forward_rel = PNARelation(d)
        self.backward_rel = PNARelation(d)
        self.norm_h, self.norm_e, self.norm_edge_h = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.update = mlp(d + 2 * 12 * d, d, 2 * d)
        self.edge_mlp = EdgeMLP(d, d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        hn = self.norm_h(h)
        fwd = self.forward_rel(hn, edge_index, e, batch, num_graphs)
        bwd = self.backward_rel(hn, edge_index.flip(0), e, batch, num_graphs)
        h = h + self.dropout(self.update(torch.cat([hn, fwd, bwd], -1)))
        e = e + self.dropout(self.edge_mlp(self.norm_edge_h(h), edge_index, self.norm_e(e)))
        return h, e
