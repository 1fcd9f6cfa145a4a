"""SignGNN and its layer: equivariant to the sign flips of odd neurons (and to relabellings)
by construction, in float64, on random MLPs that mix odd and other activations."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import converters
import graphnfn
from graphnfn import Sine
from graphnfn.execute import run_graph
from graphnfn.features import ProbeFeatures
from graphnfn.graph import ACT_COLS, NODE_COL, WEIGHT_COL, Activation
from graphnfn.models import node_layers
from graphnfn.nn import SignEquivariantConv
from graphnfn.nn.sign import ParityMLP
from graphnfn.registry import build
from graphnfn.sign_model import SignGNN, acted_nodes

ACTS = {"sine": lambda: Sine(3.0), "tanh": nn.Tanh, "relu": nn.ReLU}


def random_batch(nets: list[tuple[list[int], list[str]]], seed: int):
    """A batch of MLP graphs: per network its widths and one activation name per hidden layer."""
    torch.manual_seed(seed)
    graphs = []
    for widths, acts in nets:
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(ACTS[acts[i % len(acts)]]())
        graphs.append(converters.to_graph(nn.Sequential(*layers).double()))
    return graphnfn.collate(graphs)


def flip(g, signs):
    """The batch with neuron j's bias times signs[j] and edge i -> j's weights times signs[i] signs[j]."""
    out = g.clone()
    out.x = g.x.clone()
    out.x[:, NODE_COL["bias"]] *= signs
    out.edge_attr = g.edge_attr.clone()
    out.edge_attr[:, WEIGHT_COL:] *= (signs[g.edge_index[0]] * signs[g.edge_index[1]]).unsqueeze(1)
    return out


def random_signs(g, seed: int):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2, (g.num_nodes,), generator=gen).double() * 2 - 1
    return torch.where(acted_nodes(g), s, 1.0)


nets_strategy = st.lists(st.tuples(st.lists(st.integers(1, 4), min_size=3, max_size=5),
                                   st.lists(st.sampled_from(sorted(ACTS)), min_size=1, max_size=3)),
                         min_size=1, max_size=3)


def test_flipping_acted_neurons_keeps_the_function_and_other_flips_do_not():
    """The group the model respects is a real symmetry of the networks (outputs of run_graph
    unchanged), and the test's flips are not vacuous: flipping a ReLU neuron changes them."""
    g = random_batch([([2, 4, 3, 1], ["sine", "relu"]), ([2, 3, 3, 2], ["tanh"])], 0)
    probes = torch.randn(5, 2, dtype=torch.float64)
    outputs = g.node_type == graphnfn.NodeType.OUTPUT

    def run(graph):
        return run_graph(probes, graph.x, graph.edge_index, graph.edge_attr, graph.node_type, graph.edge_type,
                         graph.layer, node_layers(graph))[outputs]
    acted = acted_nodes(g)
    assert acted.sum() == 4 + 3 + 3  # the sine and tanh layers; the ReLU layer is not acted on
    torch.testing.assert_close(run(flip(g, torch.where(acted, -1.0, 1.0).double())), run(g))
    relu = (g.node_type == graphnfn.NodeType.HIDDEN) & ~acted
    assert not torch.allclose(run(flip(g, torch.where(relu, -1.0, 1.0).double())), run(g))


@settings(max_examples=10, deadline=None)
@given(nets=nets_strategy, seed=st.integers(0, 2**16))
def test_readouts_transform_with_the_signs(nets, seed):
    """Invariant output unchanged, node output times s_j, equivariant output times s_i s_j, and
    edit(flipped) is the flip of edit(g), under random sign flips of the acted-on neurons."""
    g = random_batch(nets, seed)
    s = random_signs(g, seed)
    gf = flip(g, s)
    n_inputs = int(g.x[g.node_type == graphnfn.NodeType.INPUT, NODE_COL["position"]].max()) + 1
    probe = ProbeFeatures(4, n_inputs)
    torch.manual_seed(seed)
    inv = SignGNN(3, "invariant", d_hidden=8, n_layers=2, fourier=4, probe=probe).double()
    torch.testing.assert_close(inv(gf), inv(g), rtol=1e-9, atol=1e-10)
    node = SignGNN(2, "node", d_hidden=8, n_layers=2, fourier=4).double()
    torch.testing.assert_close(node(gf), node(g) * s.unsqueeze(1), rtol=1e-9, atol=1e-10)
    eq = SignGNN(1, "equivariant", d_hidden=8, n_layers=2, fourier=4).double()
    pair = (s[g.edge_index[0]] * s[g.edge_index[1]]).unsqueeze(1)
    torch.testing.assert_close(eq(gf), eq(g) * pair, rtol=1e-9, atol=1e-10)
    edited, edited_flipped = eq.edit(g), eq.edit(gf)
    expected = flip(edited, s)
    torch.testing.assert_close(edited_flipped.edge_attr, expected.edge_attr, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(edited_flipped.x, expected.x, rtol=1e-9, atol=1e-10)


@settings(max_examples=8, deadline=None)
@given(nets=nets_strategy, seed=st.integers(0, 2**16))
def test_invariant_to_relabelling_hidden_neurons(nets, seed):
    """Permuting each network's hidden neurons (a graph isomorphism) leaves the output alone."""
    torch.manual_seed(seed)
    g = random_batch(nets, seed)
    model = SignGNN(3, "invariant", d_hidden=8, n_layers=2, fourier=4).double()
    perm = torch.arange(g.num_nodes)
    hidden = (g.node_type == graphnfn.NodeType.HIDDEN).nonzero().squeeze(1)
    perm[hidden] = hidden[torch.randperm(len(hidden))]  # any relabelling of hidden neurons among themselves
    # ... restricted to one graph and one layer each, so the result is the same batch of networks
    keys = g.batch[hidden] * 1000 + g.layer[hidden]
    for key in torch.unique(keys):
        at = hidden[keys == key]
        perm[at] = at[torch.randperm(len(at))]
    new_label = torch.empty_like(perm)
    new_label[perm] = torch.arange(g.num_nodes)
    gp = g.clone()
    for name in ("x", "node_type", "layer", "batch", "node_group", "node_index"):
        if getattr(g, name, None) is not None:
            setattr(gp, name, getattr(g, name)[perm])
    gp.edge_index = new_label[g.edge_index]
    torch.testing.assert_close(model(gp), model(g), rtol=1e-9, atol=1e-10)


def test_not_invariant_to_what_is_no_symmetry():
    """Flipping a neuron's incoming weights only (a different network) changes the output, and so
    does flipping a ReLU neuron: the invariance is not bought by ignoring signs."""
    g = random_batch([([2, 4, 4, 1], ["sine", "relu"])], 1)
    torch.manual_seed(0)
    model = SignGNN(1, "invariant", d_hidden=8, n_layers=2, fourier=4).double()
    gi = g.clone()
    gi.edge_attr = g.edge_attr.clone()
    j = int(acted_nodes(g).nonzero()[0])
    gi.edge_attr[g.edge_index[1] == j, WEIGHT_COL:] *= -1
    assert not torch.allclose(model(gi), model(g))
    relu = (g.node_type == graphnfn.NodeType.HIDDEN) & ~acted_nodes(g)
    assert not torch.allclose(model(flip(g, torch.where(relu, -1.0, 1.0).double())), model(g))


def rescale(g, factors):
    """The batch with neuron j's bias times factors[j] and edge i -> j's weights times
    factors[j] / factors[i] (a positive scaling of ReLU neurons keeps the function)."""
    out = g.clone()
    out.x = g.x.clone()
    out.x[:, NODE_COL["bias"]] *= factors
    out.edge_attr = g.edge_attr.clone()
    out.edge_attr[:, WEIGHT_COL:] *= (factors[g.edge_index[1]] / factors[g.edge_index[0]]).unsqueeze(1)
    return out


@settings(max_examples=8, deadline=None)
@given(nets=nets_strategy, seed=st.integers(0, 2**16))
def test_scale_option_adds_invariance_to_relu_scalings(nets, seed):
    """``symmetry="scale"``: invariant to positive scalings of ReLU neurons and sign flips of odd
    ones at once (statistics and probe features included); without it a scaling moves the output."""
    g = random_batch(nets + [([2, 3, 4, 1], ["relu", "sine"])], seed)
    relu = (g.node_type == graphnfn.NodeType.HIDDEN) & (g.x[:, ACT_COLS.start + int(Activation.RELU)] > 0)
    gen = torch.Generator().manual_seed(seed)
    factors = torch.where(relu, torch.rand(g.num_nodes, generator=gen, dtype=torch.float64) * 4 + 0.1, 1.0)
    moved = flip(rescale(g, factors), random_signs(g, seed))
    n_inputs = int(g.x[g.node_type == graphnfn.NodeType.INPUT, NODE_COL["position"]].max()) + 1
    probes = torch.randn(5, n_inputs, dtype=torch.float64)
    outputs = g.node_type == graphnfn.NodeType.OUTPUT

    def run(graph):
        return run_graph(probes, graph.x, graph.edge_index, graph.edge_attr, graph.node_type, graph.edge_type,
                         graph.layer, node_layers(graph))[outputs]
    torch.testing.assert_close(run(moved), run(g))  # the same networks
    torch.manual_seed(seed)
    aware = SignGNN(3, d_hidden=8, n_layers=2, fourier=4, probe=ProbeFeatures(4, n_inputs), tensor_stats=8,
                    symmetry="scale").double()
    torch.testing.assert_close(aware(moved), aware(g), rtol=1e-9, atol=1e-10)
    torch.manual_seed(seed)
    plain = SignGNN(3, d_hidden=8, n_layers=2, fourier=4, tensor_stats=8).double()
    assert not torch.allclose(plain(moved), plain(g), atol=1e-6)
    with pytest.raises(ValueError, match="symmetry must be"):
        SignGNN(1, symmetry="permute")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), parity=st.sampled_from([-1, 1]))
def test_parity_mlp_is_the_odd_or_even_part(seed, parity):
    """On acted rows: (f(x) +- f(-x)) / 2 of the same MLP; elsewhere f(x)."""
    torch.manual_seed(seed)
    f = ParityMLP(5, 3, 7, parity).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    acted = torch.tensor([True, False, True, True, False, False])
    def plain(v):
        return f.out(nn.functional.silu(f.inp(v)))
    want = torch.where(acted.unsqueeze(1), (plain(x) + parity * plain(-x)) / 2, plain(x))
    torch.testing.assert_close(f(x, acted), want)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_layer_is_sign_equivariant(seed):
    """The layer alone, on random states: h_j -> s_j h_j and e_ij -> s_i s_j e_ij move its
    outputs the same way, for any set of acted-on nodes."""
    g = random_batch([([3, 4, 2], ["tanh"]), ([2, 5, 3, 1], ["sine"])], seed)
    gen = torch.Generator().manual_seed(seed)
    layer = SignEquivariantConv(6).double()
    h = torch.randn(g.num_nodes, 6, dtype=torch.float64, generator=gen)
    e = torch.randn(g.num_edges, 6, dtype=torch.float64, generator=gen)
    acted = torch.rand(g.num_nodes, generator=gen) < 0.7
    s = torch.where(acted, torch.randint(0, 2, (g.num_nodes,), generator=gen).double() * 2 - 1, 1.0)
    pair = (s[g.edge_index[0]] * s[g.edge_index[1]]).unsqueeze(1)
    h_out, e_out = layer(h, g.edge_index, e, g.batch, g.num_graphs, acted)
    h_flip, e_flip = layer(h * s.unsqueeze(1), g.edge_index, e * pair, g.batch, g.num_graphs, acted)
    torch.testing.assert_close(h_flip, h_out * s.unsqueeze(1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(e_flip, e_out * pair, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("readout", ["invariant", "equivariant"])
def test_registry_builds_and_trains_sign_gnn(readout):
    """``sign-gnn`` by name, one optimizer step that moves the loss, on a SIREN-like batch."""
    g = random_batch([([2, 8, 8, 1], ["sine"])] * 4, 0)  # float64 values; the model reads them in float32
    torch.manual_seed(0)
    model = build("sign-gnn", g, d_out=3 if readout == "invariant" else 1, readout=readout, d_hidden=16)
    assert model.encoding.startswith("odd-fourier16")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    target = torch.randn_like(model(g))
    losses = []
    for _ in range(3):
        loss = nn.functional.mse_loss(model(g), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
