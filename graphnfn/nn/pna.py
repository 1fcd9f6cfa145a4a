"""Edge-aware PNA message passing on neuron graphs."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from .aggregate import scatter_max, scatter_min, scatter_sum
from .blocks import EdgeMLP, mlp, reset_children

AGGREGATORS = ("mean", "max", "min", "std")
DEGREE_SCALERS = ("identity", "amplification", "attenuation")  # 1, log(deg+1) / delta, delta / log(deg+1)
AGGREGATED = len(AGGREGATORS) * len(DEGREE_SCALERS)  # a relation's output is AGGREGATED * d wide


class DegreeScalers(NamedTuple):
    """What PNA's aggregation needs of one direction's receiving nodes, the same in every
    layer (computed once per batch by :meth:`EdgePNAConv.scalers`).

    count [N, 1]: in-degree, at least 1 (the mean's divisor);
    scale [N, len(DEGREE_SCALERS), 1]: 1, log(deg+1) / delta and delta / log(deg+1), where
    delta is the mean log(deg+1) over the node's own graph.
    """

    count: Tensor
    scale: Tensor

    @classmethod
    def of(cls, index: Tensor, batch: Tensor, num_graphs: int, dtype: torch.dtype) -> DegreeScalers:
        """index [E]: each message's receiving node; batch [N]: each node's graph."""
        deg = scatter_sum(torch.ones_like(index, dtype=dtype), index, batch.size(0)).unsqueeze(-1)
        log_deg = torch.log1p(deg)
        delta = scatter(log_deg, batch, 0, num_graphs, "mean").index_select(0, batch).clamp(min=1e-2)
        scale = torch.stack([torch.ones_like(deg), log_deg / delta, delta / log_deg.clamp(min=1e-2)], 1)
        return cls(deg.clamp(min=1), scale)


class PNARelation(MessagePassing):
    """One relation (forward or backward along the network's connections) of
    :class:`EdgePNAConv`: FiLM-modulated messages, four aggregators, three
    degree scalers.

    message:   m_ij = SiLU(A h_i + B h_j + C e_ij) * (1 + gamma(e_ij)) + beta(e_ij)    [E, d]
    aggregate: [mean, max, min, std] of m_ij over j (AGGREGATORS), each times
               [1, log(deg+1) / delta, delta / log(deg+1)] (DEGREE_SCALERS)          [N, AGGREGATED d]
    where delta is the mean of log(deg+1) over the receiving node's graph, so a
    graph's output does not depend on what else is in its batch. A and B act on
    nodes before the gather, so the only per-edge matmul is the edge's (C, gamma, beta).

    Args:
        d: node and edge feature width.
    """

    def __init__(self, d: int):
        super().__init__(aggr=None)
        self.target, self.source = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.edge = nn.Linear(d, 3 * d)  # C, gamma and beta, stacked

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, scalers: DegreeScalers) -> Tensor:
        """h [N, d], edge_index [2, E] (messages j=edge_index[0] -> i=edge_index[1]),
        e [E, d], ``scalers``: the receiving nodes' :class:`DegreeScalers` -> [N, AGGREGATED d]."""
        a = self.target(h) + self.edge.bias[:h.size(1)]  # C's bias, added per node rather than per edge
        return self.propagate(edge_index, a=a, b=self.source(h), e=e, scalers=scalers)

    def message(self, a_i: Tensor, b_j: Tensor, e: Tensor) -> Tensor:
        d = e.size(1)
        (w_c, w_gamma, w_beta), (_, b_gamma, b_beta) = self.edge.weight.split(d), self.edge.bias.split(d)
        act = nn.functional.silu(torch.addmm(a_i + b_j, e, w_c.t()))  # the matmul adds C e_ij to the node parts
        gamma, beta = nn.functional.linear(e, w_gamma, b_gamma), nn.functional.linear(e, w_beta, b_beta)
        return torch.addcmul(act + beta, act, gamma)  # act * (1 + gamma) + beta

    def aggregate(self, inputs: Tensor, index: Tensor, dim_size: int, scalers: DegreeScalers) -> Tensor:
        d = inputs.size(1)
        mean = scatter_sum(inputs, index, dim_size) / scalers.count
        sq = scatter_sum(inputs * inputs, index, dim_size) / scalers.count
        std = torch.sqrt(torch.relu(sq - mean * mean) + 1e-5)
        aggs = torch.cat([mean, scatter_max(inputs, index, dim_size), scatter_min(inputs, index, dim_size), std], -1)
        return (aggs.unsqueeze(1) * scalers.scale).view(-1, AGGREGATED * d)


class EdgePNAConv(nn.Module):
    """Edge-aware PNA layer over both directions of a neuron graph.

    h_i' = h_i + U([LN(h_i), A_fwd(i), A_bwd(i)])        A: :class:`PNARelation`
    e_ij' = e_ij + V([LN(h_i'), LN(h_j'), LN(e_ij)])     (edge update, :class:`EdgeMLP`)

    Forward messages flow along the network's connections (input -> output),
    backward ones against them: a weight's meaning depends on both its ends.

    Args:
        d: node and edge feature width.
        dropout: on the node and the edge update.
    """

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.forward_rel = PNARelation(d)
        self.backward_rel = PNARelation(d)
        self.norm_h, self.norm_e, self.norm_edge_h = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.update = mlp(d + 2 * AGGREGATED * d, d, 2 * d)
        self.edge_mlp = EdgeMLP(d, d, d)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        reset_children(self)

    @staticmethod
    def scalers(edge_index: Tensor, batch: Tensor, num_graphs: int,
                dtype: torch.dtype) -> tuple[DegreeScalers, DegreeScalers]:
        """The forward and the backward direction's :class:`DegreeScalers` of a batch."""
        return tuple(DegreeScalers.of(edge_index[i], batch, num_graphs, dtype) for i in (1, 0))

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor,
                num_graphs: int | None = None) -> tuple[Tensor, Tensor]:
        """h [N, d], edge_index [2, E], e [E, d], batch [N] -> (h' [N, d], e' [E, d]).
        ``num_graphs``: B, read off ``batch`` (a device sync) when not given."""
        num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
        scalers = self.scalers(edge_index, batch, num_graphs, h.dtype)  # a scatter over E: cheap next to the layer
        hn = self.norm_h(h)
        fwd = self.forward_rel(hn, edge_index, e, scalers[0])
        bwd = self.backward_rel(hn, edge_index.flip(0), e, scalers[1])
        h = h + self.dropout(self.update(torch.cat([hn, fwd, bwd], -1)))
        e = e + self.dropout(self.edge_mlp(self.norm_edge_h(h), edge_index, self.norm_e(e)))
        return h, e
