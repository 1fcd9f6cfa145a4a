"""Sparse relational attention: each neuron attends over its graph neighbours only."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from .pna import EdgeMLP, mlp


class SparseRelationalAttention(MessagePassing):
    """Multi-head attention of each node over its neighbours in both directions,
    with edge features in keys and values, pre-norm, residual, and an edge update.

    For node i and neighbour j over edge (relation r: forward or backward):
        q_i = W_q LN(h_i),  k_ij = W_k LN(h_j) + K_r(LN(e_ij)),  v_ij = W_v LN(h_j) + V_r(LN(e_ij))
        a_ij = softmax_j(q_i . k_ij / sqrt(d_head))         over i's neighbours only
        h_i' = h_i + W_o sum_j a_ij v_ij;   h_i'' = h_i' + FFN(LN(h_i'))
        e_ij' = e_ij + U([LN(h_i''), LN(h_j''), LN(e_ij)])
    The 2E (edge, relation) pairs are the only attention entries: memory and time
    grow with E, and there is no dense [N, N] tensor and no padding.
    Shapes: h [N, d], edge_index [2, E], e [E, d] -> (h [N, d], e [E, d]).
    """

    def __init__(self, d: int, heads: int = 4, dropout: float = 0.0):
        super().__init__(aggr="sum", node_dim=0)
        if d % heads:
            raise ValueError(f"d={d} is not divisible by heads={heads}")
        self.heads, self.d_head = heads, d // heads
        self.norm_h, self.norm_e, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_edge_h = nn.LayerNorm(d)
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
        # per relation (0: forward, 1: backward) projections of the edge into key and value
        self.edge_kv = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(2))
        self.ffn = mlp(d, d, 2 * d)
        self.edge_mlp = EdgeMLP(d, d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        n, hd = h.size(0), (self.heads, self.d_head)
        hn, en = self.norm_h(h), self.norm_e(e)
        both = torch.cat([edge_index, edge_index.flip(0)], 1)  # forward and backward relations
        ek = torch.cat([self.edge_kv[0](en), self.edge_kv[1](en)], 0)
        ek, ev = ek.chunk(2, dim=-1)
        attended = self.propagate(both, q=self.query(hn).view(n, *hd), k=self.key(hn).view(n, *hd),
                                  v=self.value(hn).view(n, *hd), ek=ek.view(-1, *hd), ev=ev.view(-1, *hd), size=(n, n))
        h = h + self.dropout(self.out(attended.reshape(n, -1)))
        h = h + self.dropout(self.ffn(self.norm_ffn(h)))
        e = e + self.dropout(self.edge_mlp(self.norm_edge_h(h), edge_index, en))
        return h, e

    def message(self, q_i: Tensor, k_j: Tensor, v_j: Tensor, ek: Tensor, ev: Tensor, index: Tensor,
                size_i: int) -> Tensor:
        score = (q_i * (k_j + ek)).sum(-1) / math.sqrt(self.d_head)  # [2E, heads]
        alpha = softmax(score, index, num_nodes=size_i)
        return self.dropout(alpha).unsqueeze(-1) * (v_j + ev)
