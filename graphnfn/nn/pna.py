"""Edge-aware PNA message passing on neuron graphs."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree, scatter


def mlp(d_in: int, d_out: int, d_hidden: int | None = None) -> nn.Sequential:
    """Two-layer MLP with SiLU, the building block of every update here."""
    d_hidden = d_hidden or d_out
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class PNARelation(MessagePassing):
    """One relation (forward or backward along the network's connections) of
    :class:`EdgePNAConv`: FiLM-modulated messages, four aggregators, three
    degree scalers.

    message:   m_ij = M([h_i, h_j]) * (1 + gamma(e_ij)) + beta(e_ij)         [E, d]
    aggregate: [mean, max, min, std] of m_ij over j, each times
               [1, log(deg+1) / delta, delta / log(deg+1)]                    [N, 12 d]
    where delta is the mean of log(deg+1) over the receiving node's graph, so a
    graph's output does not depend on what else is in its batch.
    """

    AGGREGATORS = ("mean", "max", "min", "std")

    def __init__(self, d: int):
        super().__init__(aggr=None)
        self.msg = mlp(2 * d, d)
        self.film = nn.Linear(d, 2 * d)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """h [N, d], edge_index [2, E] (messages j=edge_index[0] -> i=edge_index[1]),
        e [E, d], batch [N] -> [N, 12 d]."""
        return self.propagate(edge_index, h=h, e=e, batch=batch, num_graphs=num_graphs)

    def message(self, h_i: Tensor, h_j: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.film(e).chunk(2, dim=-1)
        return self.msg(torch.cat([h_i, h_j], -1)) * (1 + gamma) + beta

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
    e_ij' = e_ij + V([h_i', h_j', LN(e_ij)])              (edge update)

    Forward messages flow along the network's connections (input -> output),
    backward ones against them: a weight's meaning depends on both its ends.
    Shapes: h [N, d], edge_index [2, E], e [E, d], batch [N] -> (h' [N, d], e' [E, d]).
    """

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.forward_rel = PNARelation(d)
        self.backward_rel = PNARelation(d)
        self.norm_h = nn.LayerNorm(d)
        self.norm_e = nn.LayerNorm(d)
        self.update = mlp(d + 2 * 12 * d, d, 2 * d)
        self.edge_mlp = mlp(3 * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        hn = self.norm_h(h)
        fwd = self.forward_rel(hn, edge_index, e, batch, num_graphs)
        bwd = self.backward_rel(hn, edge_index.flip(0), e, batch, num_graphs)
        h = h + self.dropout(self.update(torch.cat([hn, fwd, bwd], -1)))
        src, dst = edge_index
        e = e + self.dropout(self.edge_mlp(torch.cat([h[src], h[dst], self.norm_e(e)], -1)))
        return h, e
