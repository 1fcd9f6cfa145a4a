"""Attention as graph nodes (the encoding docs/encoding.md describes).

For h heads of key size d_k and value size d_v reading residual-stream
features x (one node per feature):

* a QUERY and a KEY node per (head, dim), with ATTN_Q / ATTN_K edges from the
  stream carrying W_q[r, i] / W_k[r, i] and the biases as node features;
* a QK_PAIR edge from query (h, d) to key (h, d) whose weight is the logit
  scale: the bilinear form q . k of the head is visible edge by edge;
* a HEAD node per head (softmax activation, ``causal`` feature) with HEAD
  edges from its queries and keys and to its values: the head's attention
  pattern, and what makes the head's q, k and v nodes one block;
* a VALUE node per (head, dim) with ATTN_V edges from the stream; it holds
  the head-mixed value A_h (x W_v + b_v) (the bias passes through A_h, whose
  rows sum to 1);
* an output node per feature with ATTN_O edges W_o[j, r] from the values.

Grouped-query attention (g key/value heads, each serving h / g consecutive
query heads): KEY nodes per (key/value head, dim), paired with the queries of
every head of its group and feeding their HEAD nodes; KV_VALUE nodes per
(key/value head, dim) carry W_v and b_v, and KV_SHARE edges copy them into
the VALUE node (h, d) of each query head of the group, which its HEAD node
mixes. Rotary embeddings: a ROTARY edge from dim i to dim j of each head's
queries and keys for every rotary pair (i, j), weighted by the pair's
frequency (the edge's direction tells the sense of the rotation).

Permuting heads (blocks of q, k, head, v nodes; a key/value head with its
query group), dims inside a head jointly on q and k (only within rotary
pairs of one frequency), or jointly on v and the columns of W_o, maps this
graph onto the graph of the permuted (same-function) network.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from graphnfn.graph import Activation, EdgeType, NodeType

from .graph_builder import LINEAR_META, GraphBuilder, NodeGroup, row_major, transposed
from .program import Attention, Proj, Rotary, tag


def wire_attention(b: GraphBuilder, op: Attention, xq: Tensor, xk: Tensor, xv: Tensor) -> Tensor:
    """Nodes and edges of ``op`` reading the nodes xq, xk, xv (query, key and
    value sources, in feature order); returns the ids of its output nodes."""
    h, g = op.heads, op.groups
    op.require(h % g == 0 and op.q.n % h == 0 and op.v.n % g == 0 and op.q.n // h * g == op.k.n,
               f"q/k/v sizes {op.q.n}/{op.k.n}/{op.v.n} do not split into {h} query and {g} key/value heads")
    d_k, d_v, share = op.q.n // h, op.v.n // g, h // g
    op.require(op.o.inputs == h * d_v, f"{op.o.weight[0]!r} expects {op.o.inputs} inputs, the heads give {h * d_v}")

    def project(p: Proj, x: Tensor, role: str, node_type: NodeType, edge_type: EdgeType, after=()) -> NodeGroup:
        key, weight = p.weight
        rows = torch.arange(p.row0, p.row0 + p.n)
        neuron = (p.bias0 if p.bias is not None else p.row0) + torch.arange(p.n)
        block = b.add_nodes(tag(op.name, role) if role else key.rsplit(".", 1)[0], p.n, node_type,
                            [x, *after], neuron=neuron)
        slot = transposed(*weight.shape, rows) if p.transposed else row_major(rows, weight.size(1))
        b.dense(x, block.ids, p.matrix().unsqueeze(-1), slot, edge_type, key, **LINEAR_META)
        return block

    q = project(op.q, xq, "q", NodeType.QUERY, EdgeType.ATTN_Q)
    k = project(op.k, xk, "k", NodeType.KEY, EdgeType.ATTN_K)
    heads = b.add_nodes(tag(op.name, "heads"), h, NodeType.HEAD, [q.ids, k.ids])
    b.set_activation(heads.ids, Activation.SOFTMAX)
    b.set_column(heads.ids, "causal", float(op.causal))
    # query (i, d) meets key (i // share, d); key (j, d) feeds the heads j * share ... j * share + share - 1
    r = torch.arange(h * d_k)
    b.identity(q.ids, k.ids[r // (d_k * share) * d_k + r % d_k], EdgeType.QK_PAIR, op.scale)
    b.identity(q.ids, heads.ids.repeat_interleave(d_k), EdgeType.HEAD)
    r = torch.arange(g * d_k).repeat_interleave(share)
    b.identity(k.ids.repeat_interleave(share), heads.ids[r // d_k * share + torch.arange(share).repeat(g * d_k)],
               EdgeType.HEAD)
    if op.rotary is not None:
        for block in (q, k):
            _rotary_edges(b, block.ids.view(-1, d_k), op.rotary)
    if share == 1:
        v = project(op.v, xv, "v", NodeType.VALUE, EdgeType.ATTN_V, after=[heads.ids])
        values = v
    else:
        v = project(op.v, xv, "v", NodeType.KV_VALUE, EdgeType.ATTN_V)
        values = b.add_nodes(tag(op.name, "mix"), h * d_v, NodeType.VALUE, [v.ids, heads.ids])
        r = torch.arange(h * d_v)
        b.identity(v.ids[r // (d_v * share) * d_v + r % d_v], values.ids, EdgeType.KV_SHARE)
    b.identity(heads.ids.repeat_interleave(d_v), values.ids, EdgeType.HEAD)
    out = project(op.o, values.ids, "", NodeType.HIDDEN, EdgeType.ATTN_O)

    weights, biases, bias_blocks = {}, {}, defaultdict(list)  # by key: a packed q/k/v parameter is one entry
    for p, block in ((op.q, q), (op.k, k), (op.v, v), (op.o, out)):
        weights.setdefault(*p.weight)
        if p.bias is not None:
            biases.setdefault(*p.bias)
            bias_blocks[p.bias[0]].append(block)
    for key, t in weights.items():
        b.record_edges(key, t)
    for key, t in biases.items():
        b.node_param(key, t, "bias", bias_blocks[key])
    return out.ids


def _rotary_edges(b: GraphBuilder, ids: Tensor, rotary: Rotary) -> None:
    """ROTARY edges dim i -> dim j of every head (ids [heads, d]) for each pair (i, j), weight its frequency."""
    src, dst = ids[:, rotary.pairs[:, 0]].reshape(-1), ids[:, rotary.pairs[:, 1]].reshape(-1)
    freq = rotary.freq.to(b.dtype).repeat(ids.size(0)).view(-1, 1, 1)
    b.add_edges(src[:, None], dst[:, None], freq, EdgeType.ROTARY, **LINEAR_META)
