"""Attention as graph nodes (the encoding of DESIGN.md).

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

Permuting heads (blocks of q, k, head, v nodes), dims inside a head jointly
on q and k, or jointly on v and the columns of W_o, maps this graph onto the
graph of the permuted (same-function) network.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from graphnfn.graph import Activation, EdgeType, NodeType

from . import ir
from .graph_builder import LINEAR_META, Block, GraphBuilder, row_major


def wire_attention(b: GraphBuilder, op: ir.Attention, xq: Tensor, xk: Tensor, xv: Tensor) -> Tensor:
    """Nodes and edges of ``op`` reading the nodes xq, xk, xv (query, key and
    value sources, in feature order); returns the ids of its output nodes."""
    h = op.heads
    op.require(op.q.n == op.k.n and op.q.n % h == 0 and op.v.n % h == 0,
               f"q/k/v sizes {op.q.n}/{op.k.n}/{op.v.n} do not split into {h} heads")
    op.require(op.o.weight[1].size(1) == op.v.n,
               f"{op.o.weight[0]!r} expects {op.o.weight[1].size(1)} inputs, the heads give {op.v.n}")

    def project(p: ir.Proj, x: Tensor, role: str, node_type: NodeType, edge_type: EdgeType, after=()) -> Block:
        key, weight = p.weight
        rows = slice(p.row0, p.row0 + p.n)
        neuron = (p.bias0 if p.bias is not None else p.row0) + torch.arange(p.n)
        block = b.add_nodes(ir.tag(op.name, role) if role else key.rsplit(".", 1)[0], p.n, node_type,
                            [x, *after], neuron=neuron)
        b.dense(x, block.ids, weight[rows].unsqueeze(-1), row_major(torch.arange(p.row0, p.row0 + p.n), weight.size(1)),
                edge_type, key, **LINEAR_META)
        return block

    q = project(op.q, xq, "q", NodeType.QUERY, EdgeType.ATTN_Q)
    k = project(op.k, xk, "k", NodeType.KEY, EdgeType.ATTN_K)
    heads = b.add_nodes(ir.tag(op.name, "heads"), h, NodeType.HEAD, [q.ids, k.ids])
    b.set_activation(heads.ids, Activation.SOFTMAX)
    b.set_column(heads.ids, "causal", float(op.causal))
    b.identity(q.ids, k.ids, EdgeType.QK_PAIR, op.scale)
    head_of_qk = heads.ids.repeat_interleave(op.q.n // h)
    b.identity(q.ids, head_of_qk, EdgeType.HEAD)
    b.identity(k.ids, head_of_qk, EdgeType.HEAD)
    v = project(op.v, xv, "v", NodeType.VALUE, EdgeType.ATTN_V, after=[heads.ids])
    b.identity(heads.ids.repeat_interleave(op.v.n // h), v.ids, EdgeType.HEAD)
    out = project(op.o, v.ids, "", NodeType.HIDDEN, EdgeType.ATTN_O)

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
    for key, t in op.consts.items():
        b.record_const(key, t)
    return out.ids
