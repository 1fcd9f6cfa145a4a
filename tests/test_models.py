"""Graph models: invariance / equivariance under the networks' symmetries (float64),
batching, autocast, probe features (learning itself: tests/test_learning.py, held out)."""
import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch_geometric.loader import DataLoader

import converters
import graphnfn
from graphnfn import registry
from graphnfn.features import EdgeEncoder, ProbeFeatures
from graphnfn.models import BACKBONES, GraphNFN, apply_edge_delta
from graphnfn.sign_model import SignGNN
from test_transformer import vit_moves, vits
from test_transformer_tools import group_node_map, permuted
from nets import assert_bitwise_equal, cnns, induced_edge_map, induced_node_map, mlps, permute_hidden, randomize_norms

READOUTS = ["invariant", "node", "equivariant"]
GRAPH_MODELS = BACKBONES + ("sign-gnn",)  # GraphNFN's backbones and SignGNN


def model_for(backbone, readout, probe=False, symmetry=None, d_out=3, pool="graph"):
    torch.manual_seed(0)
    if backbone == "sign-gnn":
        return SignGNN(d_out, readout=readout, d_hidden=16, n_layers=2, fourier=4,
                       probe=ProbeFeatures(4, 6) if probe else None, pool=pool, pool_depths=3).double().eval()
    return GraphNFN(d_out, backbone=backbone, readout=readout, d_hidden=16, n_layers=2, heads=2, fourier=4,
                    probe=ProbeFeatures(4, 6) if probe else None, symmetry=symmetry, pool=pool,
                    pool_depths=3).double().eval()


def graphs_of(model, seed):
    """(graph, graph of a hidden-permuted copy, node map, edge map), float64."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    randomize_norms(model, gen)
    permuted, perms = permute_hidden(model.eval(), gen)
    g1, g2 = converters.to_graph(model), converters.to_graph(permuted)
    nodes = induced_node_map(g1, g2, perms)
    return g1, g2, nodes, induced_edge_map(g1, g2, nodes)


def check_equivariance(net, g1, g2, nodes, edges):
    out1, out2 = net(g1), net(g2)
    expected = {"invariant": lambda: out2, "node": lambda: out2[nodes], "equivariant": lambda: out2[edges]}[net.readout]()
    torch.testing.assert_close(expected, out1, rtol=1e-9, atol=1e-9)


@settings(max_examples=8)
@given(mlps(max_width=5), st.integers(0, 2**16))
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout", READOUTS)
def test_mlp_permutation_symmetry_all_features(backbone, readout, model, seed):
    check_equivariance(model_for(backbone, readout, probe=True), *graphs_of(model, seed))


@settings(max_examples=8)
@given(mlps(max_width=5), st.integers(0, 2**16))
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
def test_layer_pooling_is_invariant(backbone, model, seed):
    """pool="layer" (3 depth slots: deeper MLPs share the last) keeps the invariance."""
    check_equivariance(model_for(backbone, "invariant", probe=True, pool="layer"), *graphs_of(model, seed))


def test_layer_pooling_pools_each_depth_apart():
    """pool_graphs per depth: slot k of graph b holds the mean and max over graph b's nodes at depth k
    (edges: at their target's depth); deeper nodes share the last slot; empty slots are 0."""
    from graphnfn.models import pool_graphs
    g = graphnfn.collate([converters.to_graph(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2), nn.Tanh(),
                                                            nn.Linear(2, 1))),
                          converters.to_graph(nn.Sequential(nn.Linear(2, 2)))])
    h = torch.randn(g.num_nodes, 2, dtype=torch.float64)
    e = torch.randn(g.num_edges, 2, dtype=torch.float64)
    out = pool_graphs(h, e, g.batch, g.edge_index, 2, g.layer, depths=3).view(2, 3, 8)
    dst = g.edge_index[1]

    def mean_max(x, at):
        return torch.cat([x[at].mean(0), x[at].amax(0)]) if at.any() else torch.zeros(4, dtype=torch.float64)

    for b in range(2):
        for k in range(3):
            nodes = (g.batch == b) & (g.layer.clamp(max=2) == k)
            edges = (g.batch[dst] == b) & (g.layer[dst].clamp(max=2) == k)  # none into the input layer
            torch.testing.assert_close(out[b, k], torch.cat([mean_max(h, nodes), mean_max(e, edges)]))
    assert out[1, 2].abs().sum() == 0  # the one-layer network has no depth 2


@settings(max_examples=8)
@given(cnns(size=8), st.integers(0, 2**16))
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout", READOUTS)
def test_cnn_permutation_symmetry_all_features(backbone, readout, model, seed):
    check_equivariance(model_for(backbone, readout), *graphs_of(model, seed))


def test_outputs_depend_on_weights_and_input_order():
    """The invariance above is not trivial: changing a weight or the order of inputs changes the output."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = converters.to_graph(m)
    swapped = copy.deepcopy(m)
    with torch.no_grad():
        swapped[0].weight.copy_(m[0].weight[:, [2, 0, 1]])
    for backbone in BACKBONES:
        net = model_for(backbone, "invariant")
        base = net(g)
        assert not torch.allclose(base, net(converters.to_graph(swapped)), atol=1e-6)
        h = g.clone()
        h.edge_attr = h.edge_attr.clone()
        h.edge_attr[0, graphnfn.WEIGHT_COL] += 0.5
        assert not torch.allclose(base, net(h), atol=1e-6)


@settings(max_examples=5)
@given(st.lists(st.one_of(mlps(max_width=4), cnns(size=8)), min_size=2, max_size=4))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_mixed_batch_equals_single_graphs(backbone, models):
    graphs = [converters.to_graph(m.double()) for m in models]
    batch = graphnfn.collate(graphs)
    for readout in READOUTS:
        net = model_for(backbone, readout)
        out = net(batch)
        torch.testing.assert_close(out, torch.cat([net(g) for g in graphs]), rtol=1e-9, atol=1e-9)
        assert out.size(0) == {"invariant": len(graphs), "node": batch.num_nodes, "equivariant": batch.num_edges}[readout]


def _flip_or_scale(model, mode, gen):
    """Random sign flips (tanh/sine) or positive scalings (ReLU) of every hidden neuron."""
    out = copy.deepcopy(model)
    linears = [m for m in out if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b in zip(linears, linears[1:]):
            n = a.out_features
            f = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1 if mode == "sign"
                 else torch.rand(n, generator=gen) * 4 + 0.1).double()
            a.weight.mul_(f[:, None])
            a.bias.mul_(f)
            b.weight.div_(f[None, :])
    return out


@pytest.mark.parametrize("mode, act", [("sign", nn.Tanh), ("sign", lambda: graphnfn.Sine(3.0)), ("scale", nn.ReLU)])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_sign_and_scale_symmetry_option(mode, act, backbone):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 5), act(), nn.Linear(5, 4), act(), nn.Linear(4, 2)).double()
    t = _flip_or_scale(m, mode, gen)
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(t(x), m(x), rtol=1e-9, atol=1e-9)  # same function
    g, gt = converters.to_graph(m), converters.to_graph(t)
    for readout in ("invariant", "node"):
        aware = model_for(backbone, readout, symmetry=mode)
        torch.testing.assert_close(aware(gt), aware(g), rtol=1e-9, atol=1e-9)
    plain = model_for(backbone, "invariant")
    assert not torch.allclose(plain(gt), plain(g), atol=1e-6)  # without the option the group does change the output


def test_probe_features_are_the_network_activations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(),
                        nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)).double().eval()
    randomize_norms(net, torch.Generator().manual_seed(0))
    g = converters.to_graph(net)
    probe = ProbeFeatures(6, 2).double()
    h = probe(g.x, g.edge_index, g.edge_attr, g.node_type, g.edge_type, g.layer, len(g.spec.node_groups))
    out = g.node_type == graphnfn.NodeType.OUTPUT
    torch.testing.assert_close(h[out].T, net(probe.probes), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", [nn.GELU(), nn.GELU(approximate="tanh"), nn.LeakyReLU(0.2), nn.ELU(0.5),
                                        nn.Softplus(2.0), nn.SiLU(), graphnfn.Sine(3.0)], ids=repr)
def test_probe_features_apply_each_activation_with_its_parameter(activation):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), activation, nn.Linear(5, 3)).double()
    g = converters.to_graph(net)
    probe = ProbeFeatures(6, 2).double()
    h = probe(g.x, g.edge_index, g.edge_attr, g.node_type, g.edge_type, g.layer, len(g.spec.node_groups))
    torch.testing.assert_close(h[g.node_type == graphnfn.NodeType.OUTPUT].T, net(probe.probes), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("symmetry", [None, "sign"])
def test_probe_features_run_the_real_network_after_scaling(symmetry):
    """WeightScaler rescales every layer (here by ~100x), which changes the function; the
    probes must still see the networks as converted."""
    from graphnfn.training import WeightScaler

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()
            for _ in range(3)]
    for m in nets:
        m[4].weight.data *= 0.01
    batch = graphnfn.collate([converters.to_graph(m) for m in nets])
    batch.y = torch.zeros(3)
    scaled = WeightScaler([batch])(batch)
    assert not torch.allclose(scaled.edge_attr, batch.edge_attr)
    model = model_for("pna", "invariant", probe=True, symmetry=symmetry)
    h = model.probe_features(scaled)
    out = scaled.node_type == graphnfn.NodeType.OUTPUT
    expected = torch.cat([m(model.nodes.probe.probes[:, :2]) for m in nets], 1).T
    torch.testing.assert_close(h[out], expected, rtol=1e-9, atol=1e-9)


def test_edge_readout_edits_the_network():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(3, 2))
    g = converters.to_graph(m)
    net = GraphNFN(g.kernel_width, readout="equivariant", d_hidden=16, n_layers=1)
    delta = net(g)
    assert delta.shape == (g.num_edges, g.kernel_width)
    assert_bitwise_equal(converters.from_graph(apply_edge_delta(g, torch.zeros_like(delta))), m.state_dict())
    edited = converters.from_graph(apply_edge_delta(g, torch.ones_like(delta), torch.ones(g.num_nodes)))
    for key, value in m.state_dict().items():
        torch.testing.assert_close(edited[key], value + 1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_zero_output_edits_start_at_the_identity_and_learn(backbone):
    torch.manual_seed(0)
    g = converters.to_graph(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))
    net = GraphNFN(1, backbone=backbone, readout="equivariant", d_hidden=16, n_layers=2, zero_output=True)
    original = converters.from_graph(g)
    for key, value in converters.from_graph(net.edit(g)).items():
        assert torch.equal(value, original[key])
    loss = net.edit(g).edge_attr.square().sum() + net.edit(g).x.square().sum()
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert not torch.equal(net.edit(g).edge_attr, g.edge_attr) and not torch.equal(net.edit(g).x, g.x)


def test_chunked_edge_encoding_equals_the_whole():
    """Large graphs are encoded a chunk of edges at a time under checkpointing:
    same edge states and same gradients as encoding all edges at once."""
    torch.manual_seed(0)
    g = converters.to_graph(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.ReLU(),
                                          nn.Flatten(), nn.Linear(4 * 9, 5)).double())
    assert g.num_edges > 40
    whole = EdgeEncoder(8, fourier=4).double()
    chunked = copy.deepcopy(whole)
    chunked.chunk_values = 7 * whole.proj.in_features  # 7 edges a chunk
    attr = g.edge_attr.clone().requires_grad_()
    outs = [enc(attr, g.edge_type) for enc in (whole, chunked)]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-12)
    weights = torch.randn_like(outs[0])
    grads = [torch.autograd.grad((out * weights).sum(), [attr, *enc.parameters()])
             for out, enc in zip(outs, (whole, chunked))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_pyg_dataloader_and_autocast():
    torch.manual_seed(0)
    graphs = [converters.to_graph(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))) for _ in range(6)]
    graphs.append(converters.to_graph(nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6, 1))))
    loader = DataLoader(graphnfn.pad_kernels(graphs), batch_size=4)
    for backbone in BACKBONES:
        net = GraphNFN(2, backbone=backbone, d_hidden=16, n_layers=2)
        for batch in loader:
            ref = net(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = net(batch)
            assert ref.shape == (batch.num_graphs, 2)
            torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)



def test_edit_is_equivariant_and_differentiable():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(2, 5), graphnfn.Sine(3.0), nn.Linear(5, 4), graphnfn.Sine(3.0), nn.Linear(4, 1))
    g1, g2, nodes, edges = graphs_of(m, 0)
    net = model_for("pna", "equivariant", d_out=1)
    e1, e2 = net.edit(g1), net.edit(g2)
    torch.testing.assert_close(e2.edge_attr[edges], e1.edge_attr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(e2.x[nodes], e1.x, rtol=1e-9, atol=1e-9)
    edited = converters.from_graph(e1)  # folds back into a network of the same shapes
    assert {k: v.shape for k, v in edited.items()} == {k: v.shape for k, v in m.state_dict().items()}
    (e1.edge_attr.sum() + e1.x.sum()).backward()
    assert all(p.grad is not None for p in [*net.head.parameters(), *net.bias_head.parameters()])
    with pytest.raises(ValueError, match="readout='equivariant'"):
        model_for("pna", "invariant").edit(g1)


@settings(max_examples=6, deadline=None)
@given(mlps(max_width=5), st.integers(0, 2**16))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_edge_product_adds_a_bilinear_term_and_keeps_the_edit_equivariant(backbone, model, seed):
    """``edge_product=r``: the equivariant readout is the MLP head's output plus
    W_o[(U h_i) * (V h_j)] of each edge's end states; outputs and edits still move with
    relabelled hidden neurons (float64, probe features on, random MLPs)."""
    g1, g2, nodes, edges = graphs_of(model, seed)
    torch.manual_seed(seed)
    net = GraphNFN(g1.kernel_width, backbone=backbone, readout="equivariant", d_hidden=16, n_layers=2, heads=2,
                   fourier=4, probe=ProbeFeatures(4, 6), edge_product=5).double().eval()
    check_equivariance(net, g1, g2, nodes, edges)
    h, e, _, _ = net.encode(g1)
    src, dst = g1.edge_index
    product = (h[src] @ net.edge_product.src.weight.T) * (h[dst] @ net.edge_product.dst.weight.T)
    torch.testing.assert_close(net(g1) - net.head(torch.cat([h[src], h[dst], e], -1)),
                               product @ net.edge_product.out.weight.T, rtol=1e-9, atol=1e-9)
    e1, e2 = net.edit(g1), net.edit(g2)
    torch.testing.assert_close(e2.edge_attr[edges], e1.edge_attr, rtol=1e-9, atol=1e-9)


def test_edge_product_options():
    """zero_output zeroes its output layer too (edits start as the identity); other readouts refuse it."""
    net = GraphNFN(1, readout="equivariant", d_hidden=8, n_layers=1, zero_output=True, edge_product=3)
    assert not net.edge_product.out.weight.any() and net.edge_product.src.weight.any()
    assert GraphNFN(1, readout="equivariant", d_hidden=8, n_layers=1).edge_product is None
    with pytest.raises(ValueError, match="edge_product is a term of the equivariant readout only"):
        GraphNFN(1, readout="invariant", d_hidden=8, n_layers=1, edge_product=3)


@pytest.mark.parametrize("backbone", GRAPH_MODELS)
def test_edit_scale_scales_each_depth_and_keeps_the_edit_equivariant(backbone):
    """edit_scale: the deltas of the same model without it, times the learned scale of each
    edge's target depth (and each bias's depth); relabelling hidden neurons still commutes."""
    from graphnfn.registry import build

    m = nn.Sequential(nn.Linear(2, 5), graphnfn.Sine(3.0), nn.Linear(5, 4), graphnfn.Sine(3.0), nn.Linear(4, 1))
    g1, g2, nodes, edges = graphs_of(m, 0)
    options = {"d_out": 1, "readout": "equivariant", "d_hidden": 8, "n_layers": 2, "heads": 2, "fourier": 4}
    torch.manual_seed(0)
    plain = build(backbone, g1, **options).double()
    torch.manual_seed(0)
    scaled = build(backbone, g1, edit_scale=0.01, **options).double()
    with torch.no_grad():  # a different scale at every depth
        scaled.edit_scale.weight.copy_(torch.arange(1.0, 65.0))
        scaled.edit_scale.bias.copy_(-torch.arange(1.0, 65.0))
    p, s = plain.edit(g1), scaled.edit(g1)
    depth = g1.layer[g1.edge_index[1]]
    valid = g1.edge_group >= 0  # parameter edges: the rest are never edited
    torch.testing.assert_close((s.edge_attr - g1.edge_attr)[valid],
                               (p.edge_attr - g1.edge_attr)[valid] * (depth[valid] + 1).unsqueeze(1).double())
    torch.testing.assert_close(s.x - g1.x, (p.x - g1.x) * -(g1.layer + 1).unsqueeze(1).double())
    e2 = scaled.edit(g2)
    torch.testing.assert_close(e2.edge_attr[edges], s.edge_attr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(e2.x[nodes], s.x, rtol=1e-9, atol=1e-9)
    (s.edge_attr.sum() + s.x.sum()).backward()
    assert scaled.edit_scale.weight.grad is not None and scaled.edit_scale.bias.grad is not None


@settings(max_examples=4)
@given(st.data())
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("kind", ["heads", "qk", "vo", "mlp"])
def test_transformer_graph_symmetries(backbone, kind, data):
    """Head permutations, joint q/k and v/o dims inside a head, MLP neurons of a ViT."""
    model = data.draw(vits()).double().eval()
    moves, perms = vit_moves(model, kind, torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))))
    g1, g2 = converters.to_graph(model), converters.to_graph(permuted(model, moves))
    nodes = group_node_map(g1, g2, perms)
    for readout in ("invariant", "node"):
        net = model_for(backbone, readout)
        out1, out2 = net(g1), net(g2)
        torch.testing.assert_close(out2 if readout == "invariant" else out2[nodes], out1, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("synonym, name", [("graph", "invariant"), ("edge", "equivariant")])
def test_graph_readout_names_are_synonyms(synonym, name):
    """GraphNFN(readout="graph" | "node" | "edge") as the public API names them: the same model
    as "invariant" / "equivariant" ([B, d_out] and [E, d_out]); every builder accepts both."""
    g = graphnfn.collate([converters.to_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))] * 2)
    outs = []
    for readout in (synonym, name):
        torch.manual_seed(0)
        model = GraphNFN(d_out=5, backbone="pna", readout=readout, d_hidden=8, n_layers=1)
        assert model.readout == name
        outs.append(model(g))
    assert outs[0].shape == ((g.num_graphs, 5) if name == "invariant" else (g.num_edges, 5))
    assert torch.equal(*outs)
    space = converters.to_weight_space(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert graphnfn.paramshare.build("stat", space.spec, 5, readout=synonym) is not None
    assert registry.build("sign-gnn", g, 5, readout=synonym, d_hidden=8, n_layers=1).readout == name
    with pytest.raises(ValueError, match="'graph' for 'invariant'.*got 'nodes'"):
        GraphNFN(d_out=5, readout="nodes")
