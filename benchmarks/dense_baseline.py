"""A dense relational-transformer layer in the style of the neural-graphs
reference design (Kofinas et al., ICLR 2024): node states [B, N, d] padded to
the largest graph, edge states as a dense [B, N, N, d] tensor, attention over
all N x N pairs (padding masked here, which only helps the baseline).

Benchmark-only: it exists to measure what the sparse layers save.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_adj, to_dense_batch

from graphnfn.nn.pna import mlp


class DenseRelationalAttention(nn.Module):
    """Same maps as :class:`graphnfn.nn.SparseRelationalAttention`, computed densely."""

    def __init__(self, d: int, heads: int = 4):
        super().__init__()
        self.heads, self.d_head = heads, d // heads
        self.norm_h, self.norm_e, self.norm_ffn, self.norm_edge_h = (nn.LayerNorm(d) for _ in range(4))
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
        self.edge_kv = nn.Linear(d, 2 * d)
        self.ffn = mlp(d, d, 2 * d)
        self.edge_mlp = mlp(3 * d, d)

    def forward(self, h: Tensor, e: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h [B, N, d], e [B, N, N, d], mask [B, N] -> same shapes."""
        b, n, d = h.shape
        hn, en = self.norm_h(h), self.norm_e(e)
        split = lambda t: t.view(*t.shape[:-1], self.heads, self.d_head)  # noqa: E731
        q, k, v = split(self.query(hn)), split(self.key(hn)), split(self.value(hn))
        ek, ev = (split(t) for t in self.edge_kv(en).chunk(2, -1))
        score = ((q[:, :, None] * (k[:, None] + ek)).sum(-1) / math.sqrt(self.d_head))  # [B, N, N, H]
        score = score.masked_fill(~mask[:, None, :, None], float("-inf"))
        alpha = score.softmax(2)
        h = h + self.out((alpha.unsqueeze(-1) * (v[:, None] + ev)).sum(2).reshape(b, n, d))
        h = h + self.ffn(self.norm_ffn(h))
        hn = self.norm_edge_h(h)
        pair = torch.cat([hn[:, :, None].expand(b, n, n, d), hn[:, None].expand(b, n, n, d), en], -1)
        return h, e + self.edge_mlp(pair)


def densify(h: Tensor, e: Tensor, edge_index: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse node/edge states -> padded dense ones: [B, N, d], [B, N, N, d], mask [B, N]."""
    hd, mask = to_dense_batch(h, batch)
    ed = to_dense_adj(edge_index, batch, edge_attr=e, max_num_nodes=hd.size(1))
    return hd, ed, mask
