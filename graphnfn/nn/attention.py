"""Sparse relational attention: each neuron attends over its graph neighbours only."""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .aggregate import scatter_sum
from .blocks import EdgeMLP, mlp, reset_children


class SparseRelationalAttention(nn.Module):
    """Multi-head attention of each node over its neighbours in both directions,
    with edge features in keys and values, pre-norm, residual, and an edge update.

    For node i and neighbour j over edge (relation r: forward or backward):
        q_i = W_q LN(h_i),  k_ij = W_k LN(h_j) + K_r(LN(e_ij)),  v_ij = W_v LN(h_j) + V_r(LN(e_ij))
        a_ij = softmax_j(q_i . k_ij / sqrt(d_head))         over i's neighbours only
        h_i' = h_i + W_o sum_j a_ij v_ij;   h_i'' = h_i' + FFN(LN(h_i'))
        e_ij' = e_ij + U([LN(h_i''), LN(h_j''), LN(e_ij)])
    The 2E (edge, relation) pairs are the only attention entries: memory and time
    grow with E, and there is no dense [N, N] tensor and no padding. Each relation's
    E entries are computed on their own ([E, heads, d_head], no [2E] copies); one
    softmax normalises over both.

    Args:
        d: node and edge feature width.
        heads: attention heads (``d`` must be divisible by it).
        dropout: on the attention weights and on each residual update.
        recompute: keep no [E, d] key, value or gathered query for backward; compute them
            again there (activation checkpointing of the per-edge terms). The same outputs and
            gradients either way. None (default): only when the edge states hold more than
            ``RECOMPUTE_VALUES`` values (E x d), where it cuts the layer's peak memory by about
            40% at no cost in time; on small batches it would cost 10-30% of the layer's time
            (docs/benchmarks.md).
    """

    #: E x d above which ``recompute=None`` recomputes (as large as the edge encoder's chunks)
    RECOMPUTE_VALUES = 2**24

    def __init__(self, d: int, heads: int = 4, dropout: float = 0.0, recompute: bool | None = None):
        super().__init__()
        self.recompute = recompute
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

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor | None = None,
                num_graphs: int | None = None) -> tuple[Tensor, Tensor]:
        """h [N, d], edge_index [2, E], e [E, d] -> (h' [N, d], e' [E, d]). ``batch`` and
        ``num_graphs`` are accepted for the graph layers' common signature and not needed:
        each node attends over its own neighbours, which lie in its own graph."""
        n, d, hd = h.size(0), h.size(1), (self.heads, self.d_head)
        hn, en = self.norm_h(h), self.norm_e(e)
        q, k_node, v_node = self.query(hn).view(n, *hd), self.key(hn), self.value(hn)
        src, dst = edge_index
        receivers = (dst, src)  # relation 0: i = dst attends to j = src; relation 1: the reverse
        # with recompute, each relation's [E, d] keys, values and gathered queries are not kept for backward
        # but computed again there (checkpointing): only node-level tensors and LN(e) are kept
        recompute = e.numel() > self.RECOMPUTE_VALUES if self.recompute is None else self.recompute
        call = partial(checkpoint, use_reentrant=False) if recompute else (lambda fn, *args: fn(*args))
        scores, values = [], []
        for recv, send, proj in zip(receivers, (src, dst), self.edge_kv):
            # k_ij = (W_k LN(h_j) + b_r) + K_r LN(e_ij): the node part is gathered, then the edge's matmul adds to it
            (w_k, w_v), (b_k, b_v) = proj.weight.split(d), proj.bias.split(d)
            scores.append(call(self._scores, q, k_node + b_k, en, w_k, recv, send))
            values.append((v_node + b_v, w_v))
        alphas = self._softmax(scores, receivers, n)
        attended = sum(call(self._attend, self.dropout(alpha), v, en, w_v, recv, send)
                       for recv, send, alpha, (v, w_v) in zip(receivers, (src, dst), alphas, values))
        h = h + self.dropout(self.out(attended.view(n, d)))
        h = h + self.dropout(self.ffn(self.norm_ffn(h)))
        e = e + self.dropout(self.edge_mlp(self.norm_edge_h(h), edge_index, en))
        return h, e

    def _scores(self, q: Tensor, k_node: Tensor, en: Tensor, w_k: Tensor, recv: Tensor, send: Tensor) -> Tensor:
        """One relation's q_i . k_ij / sqrt(d_head): q [N, heads, d_head], k_node [N, d], en [E, d] -> [E, heads]."""
        q_i = q.index_select(0, recv)
        k = torch.addmm(k_node.index_select(0, send), en, w_k.t()).view_as(q_i)
        return (q_i * k).sum(-1) / math.sqrt(self.d_head)

    def _attend(self, alpha: Tensor, v_node: Tensor, en: Tensor, w_v: Tensor, recv: Tensor, send: Tensor) -> Tensor:
        """One relation's sum_j alpha_ij v_ij at each receiver: alpha [E, heads] -> [N, heads, d_head]."""
        v = torch.addmm(v_node.index_select(0, send), en, w_v.t()).view(*alpha.shape, self.d_head)
        return scatter_sum(alpha.unsqueeze(-1) * v, recv, v_node.size(0))

    @staticmethod
    def _softmax(scores: list[Tensor], receivers: tuple[Tensor, Tensor], n: int) -> list[Tensor]:
        """Each relation's scores [E, heads] -> attention weights, normalised over every
        entry a node receives in either relation (``torch_geometric.utils.softmax`` of
        all 2E entries at once, without concatenating them)."""
        top = scores[0].new_full((n, scores[0].size(1)), -math.inf)  # per node and head; only read where entries are
        for recv, s in zip(receivers, scores):
            top.scatter_reduce_(0, recv.view(-1, 1).expand_as(s), s.detach(), "amax")
        exps = [(s - top.index_select(0, recv)).exp() for recv, s in zip(receivers, scores)]
        total = sum(scatter_sum(x, recv, n) for recv, x in zip(receivers, exps)) + 1e-16
        return [x / total.index_select(0, recv) for recv, x in zip(receivers, exps)]
