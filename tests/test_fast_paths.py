"""The graph models' fast paths compute what the plain formulation does (float64):
each layer, the edge encoder and the reductions against a reference written here
with PyG's scatter/softmax and materialised concats and padding; outputs and
gradients (inputs and parameters) to 1e-9 relative."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.utils import degree, scatter, softmax

import converters
import graphnfn
from graphnfn.features import EdgeEncoder
from graphnfn.graph import WEIGHT_COL
from graphnfn.nn import EdgePNAConv, SparseRelationalAttention
from graphnfn.nn.aggregate import scatter_max, scatter_min

D = 8


def mixed_batch() -> graphnfn.NeuralGraph:
    """A SIREN-like MLP, a CNN and a transformer block (unsorted edges; nodes without in-edges)."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(2, 6), graphnfn.Sine(), nn.Linear(6, 6), graphnfn.Sine(), nn.Linear(6, 1)),
            nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(3, 4)),
            nn.TransformerEncoderLayer(4, 2, 8, batch_first=True)]
    return graphnfn.collate([converters.to_graph(net.double()) for net in nets])


def reference_edge_update(layer, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """e + MLP([LN(h_src), LN(h_dst), LN(e)]) with the [E, 3d] concat."""
    mlp, hn = layer.edge_mlp, layer.norm_edge_h(h)
    first = torch.cat([mlp.src.weight, mlp.dst.weight, mlp.edge.weight], 1)
    z = torch.cat([hn[edge_index[0]], hn[edge_index[1]], layer.norm_e(e)], -1) @ first.T + mlp.src.bias
    return e + mlp.out(F.silu(z))


def reference_attention(layer: SparseRelationalAttention, h, edge_index, e, batch, num_graphs):
    """One softmax over the 2E (edge, relation) entries, as a PyG propagate over both directions."""
    n, hd = h.size(0), (layer.heads, layer.d_head)
    hn, en = layer.norm_h(h), layer.norm_e(e)
    j, i = torch.cat([edge_index, edge_index.flip(0)], 1)
    ek, ev = torch.cat([layer.edge_kv[0](en), layer.edge_kv[1](en)]).chunk(2, -1)
    q = layer.query(hn)[i].view(-1, *hd)
    k, v = (layer.key(hn)[j] + ek).view(-1, *hd), (layer.value(hn)[j] + ev).view(-1, *hd)
    alpha = softmax((q * k).sum(-1) / math.sqrt(layer.d_head), i, num_nodes=n)
    h = h + layer.out(scatter(alpha.unsqueeze(-1) * v, i, 0, n, "sum").view(n, -1))
    h = h + layer.ffn(layer.norm_ffn(h))
    return h, reference_edge_update(layer, h, edge_index, e)


def reference_pna(layer: EdgePNAConv, h, edge_index, e, batch, num_graphs):
    """Four PyG scatters per direction, degrees and delta recomputed."""
    n, hn = h.size(0), layer.norm_h(h)

    def relation(rel, j, i):
        c, gamma, beta = rel.edge(e).chunk(3, -1)
        m = F.silu(rel.target(hn)[i] + rel.source(hn)[j] + c) * (1 + gamma) + beta
        mean, sq = scatter(m, i, 0, n, "mean"), scatter(m * m, i, 0, n, "mean")
        aggs = torch.cat([mean, scatter(m, i, 0, n, "max"), scatter(m, i, 0, n, "min"),
                          torch.sqrt(torch.relu(sq - mean * mean) + 1e-5)], -1)
        log_deg = torch.log1p(degree(i, n, dtype=h.dtype)).unsqueeze(-1)
        delta = scatter(log_deg, batch, 0, num_graphs, "mean")[batch].clamp(min=1e-2)
        return torch.cat([aggs, aggs * (log_deg / delta), aggs * (delta / log_deg.clamp(min=1e-2))], -1)

    src, dst = edge_index
    fwd, bwd = relation(layer.forward_rel, src, dst), relation(layer.backward_rel, dst, src)
    h = h + layer.update(torch.cat([hn, fwd, bwd], -1))
    return h, reference_edge_update(layer, h, edge_index, e)


def assert_same_function(fast, reference, inputs: list[torch.Tensor], params: list[torch.Tensor]) -> None:
    """Same outputs and the same gradients of a random projection of them."""
    outs, refs = fast(), reference()
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
    weights = [torch.randn_like(o) for o in refs]
    wrt = inputs + params
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(os, weights)), wrt, allow_unused=True)
             for os in (outs, refs)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["pna", "transformer", "transformer-recompute"])
def test_layers_equal_their_reference(kind):
    g = mixed_batch()
    torch.manual_seed(1)
    layer = (EdgePNAConv(D) if kind == "pna" else
             SparseRelationalAttention(D, heads=2, recompute=kind.endswith("recompute"))).double()
    h = torch.randn(g.num_nodes, D, dtype=torch.float64, requires_grad=True)
    e = torch.randn(g.num_edges, D, dtype=torch.float64, requires_grad=True)
    args = (h, g.edge_index, e, g.batch, g.num_graphs)
    reference = reference_pna if kind == "pna" else reference_attention
    assert_same_function(lambda: layer(*args), lambda: reference(layer, *args), [h, e], list(layer.parameters()))
    # without num_graphs, read off the batch vector
    assert_same_function(lambda: layer(*args[:4]), lambda: reference(layer, *args), [h, e], [])


def test_edge_encoder_skips_the_zero_padding():
    """Kernels narrower than max_kernel: the padding's projection is a constant, not materialised."""
    g = mixed_batch()
    attr = g.edge_attr[:, :WEIGHT_COL + 4].clone().requires_grad_()  # K = 4 < max_kernel = 9
    torch.manual_seed(2)
    enc = EdgeEncoder(D, fourier=3).double()

    def reference():
        kernel = F.pad(attr[:, WEIGHT_COL:], (0, enc.max_kernel - 4))
        return [enc.proj(torch.cat([attr[:, :WEIGHT_COL], enc.fourier(kernel)], 1)) + enc.edge_type(g.edge_type)]

    assert_same_function(lambda: [enc(attr, g.edge_type)], reference, [attr], list(enc.parameters()))
    enc.chunk_values = 5 * (WEIGHT_COL + 4 * enc.fourier.expansion)  # 5 edges a chunk, under checkpointing
    assert_same_function(lambda: [enc(attr, g.edge_type)], reference, [attr], list(enc.parameters()))


@pytest.mark.parametrize("reduce, fast", [("max", scatter_max), ("min", scatter_min)])
def test_scatter_extremes_match_pyg_with_ties_and_empty_rows(reduce, fast):
    torch.manual_seed(3)
    src = torch.randn(12, 3, dtype=torch.float64)
    src[5] = src[4]  # rows 4, 5 and 7 go to index 2: a tie in every column
    src[7, 1] = src[4, 1]
    src.requires_grad_()
    index = torch.tensor([0, 0, 1, 1, 2, 2, 0, 2, 1, 4, 4, 0])  # index 3 receives nothing
    out, ref = fast(src, index, 5), scatter(src, index, 0, 5, reduce)
    assert torch.equal(out, ref) and torch.equal(out[3], torch.zeros(3, dtype=torch.float64))
    grad = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad((out * grad).sum(), src)[0],
                               torch.autograd.grad((ref * grad).sum(), src)[0], rtol=0, atol=1e-15)
