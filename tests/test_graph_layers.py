"""The graph layers on their own: one signature, equivariance under graph isomorphisms
(float64, random neuron graphs of random architectures), and reset_parameters."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import converters
import graphnfn
from graphnfn.nn import EdgePNAConv, SignEquivariantConv, SparseRelationalAttention

D = 8
LAYERS = {"pna": lambda: EdgePNAConv(D), "transformer": lambda: SparseRelationalAttention(D, heads=2),
          "transformer-recompute": lambda: SparseRelationalAttention(D, heads=2, recompute=True),
          "sign": lambda: SignEquivariantConv(D)}


def random_batch(widths: list[list[int]], seed: int):
    """A batch of MLP neuron graphs of the given layer widths (one list per network)."""
    torch.manual_seed(seed)
    nets = []
    for w in widths:
        layers = [m for a, b in zip(w, w[1:]) for m in (nn.Linear(a, b), nn.Tanh())][:-1]
        nets.append(nn.Sequential(*layers))
    return graphnfn.collate([converters.to_graph(net) for net in nets])


@settings(max_examples=8, deadline=None)
@given(widths=st.lists(st.lists(st.integers(1, 5), min_size=2, max_size=4), min_size=1, max_size=3),
       seed=st.integers(0, 2**16), kind=st.sampled_from(sorted(LAYERS)))
def test_layers_are_equivariant_to_relabelling_nodes_and_edges(widths, seed, kind):
    """Any relabelling of a batch's nodes and reordering of its edges moves the outputs along:
    the layers see a graph, not an order (the neuron symmetries are such relabellings)."""
    g = random_batch(widths, seed)
    layer = LAYERS[kind]().double()
    h = torch.randn(g.num_nodes, D, dtype=torch.float64)
    e = torch.randn(g.num_edges, D, dtype=torch.float64)
    node_perm, edge_perm = torch.randperm(g.num_nodes), torch.randperm(g.num_edges)
    new_label = torch.empty_like(node_perm)
    new_label[node_perm] = torch.arange(g.num_nodes)  # node node_perm[k] becomes node k
    h_out, e_out = layer(h, g.edge_index, e, g.batch, g.num_graphs)
    h_perm, e_perm = layer(h[node_perm], new_label[g.edge_index[:, edge_perm]], e[edge_perm], g.batch[node_perm],
                           g.num_graphs)
    torch.testing.assert_close(h_perm, h_out[node_perm], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(e_perm, e_out[edge_perm], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layers_see_edge_direction(kind):
    """Reversing every edge is not a relabelling: the two relations must tell it apart."""
    g = random_batch([[2, 3, 2]], 0)
    layer = LAYERS[kind]().double()
    h = torch.randn(g.num_nodes, D, dtype=torch.float64)
    e = torch.randn(g.num_edges, D, dtype=torch.float64)
    out = layer(h, g.edge_index, e, g.batch)[0]
    assert not torch.allclose(out, layer(h, g.edge_index.flip(0), e, g.batch)[0])


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_reset_parameters_redraws_every_parameter(kind):
    """After reset_parameters under the same seed, every parameter is the freshly built one."""
    torch.manual_seed(0)
    layer = LAYERS[kind]()
    fresh = {name: p.detach().clone() for name, p in layer.named_parameters()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    torch.manual_seed(0)
    layer.reset_parameters()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p, fresh[name], msg=f"{kind}: {name} not reset")


def test_recompute_keeps_no_per_edge_key_value_or_query(monkeypatch):
    """recompute=True: autograd keeps no [E, heads, d_head] tensor (keys, values, gathered queries)
    and under half the bytes in per-edge tensors; test_fast_paths proves the outputs and
    gradients unchanged."""
    g = random_batch([[3, 5, 5, 2], [2, 4, 1]], 0)

    def kept(recompute: bool | None) -> tuple[list[tuple[int, ...]], int]:
        torch.manual_seed(0)
        layer = SparseRelationalAttention(D, heads=2, recompute=recompute).double()
        h = torch.randn(g.num_nodes, D, dtype=torch.float64, requires_grad=True)
        e = torch.randn(g.num_edges, D, dtype=torch.float64, requires_grad=True)
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = (tuple(t.shape), t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(h, g.edge_index, e)
        return ([shape for shape, _ in storages.values()],
                sum(size for shape, size in storages.values() if shape and shape[0] == g.num_edges))

    per_edge_heads = (g.num_edges, 2, D // 2)
    (keep_shapes, keep_bytes), (lean_shapes, lean_bytes) = kept(False), kept(True)
    assert keep_shapes.count(per_edge_heads) >= 6 and per_edge_heads not in lean_shapes
    assert lean_bytes < 0.5 * keep_bytes
    assert kept(None)[1] == keep_bytes  # by default only batches of more than RECOMPUTE_VALUES edge values
    monkeypatch.setattr(SparseRelationalAttention, "RECOMPUTE_VALUES", g.num_edges * D - 1)
    assert kept(None)[1] == lean_bytes


def test_recompute_under_bf16_autocast_gives_the_kept_gradients():
    """The recomputation in backward runs in the forward's autocast state (bf16 here)."""
    g = random_batch([[3, 5, 2]], 1)
    torch.manual_seed(0)
    keep = SparseRelationalAttention(D, heads=2)
    lean = SparseRelationalAttention(D, heads=2, recompute=True)
    lean.load_state_dict(keep.state_dict())
    h, e = torch.randn(g.num_nodes, D), torch.randn(g.num_edges, D)
    grads = []
    for layer in (keep, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h_out, e_out = layer(h, g.edge_index, e)
        (h_out.float().square().sum() + e_out.float().square().sum()).backward()
        grads.append([p.grad for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    keep.zero_grad()
    sum(t.square().sum() for t in keep(h, g.edge_index, e)).backward()
    assert any(not torch.allclose(p.grad, a, rtol=1e-4, atol=1e-5) for p, a in zip(keep.parameters(), grads[0])), \
        "autocast changed nothing: the test would not see a recomputation in float32"
