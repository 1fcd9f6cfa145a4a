"""Probe features for the parameter-sharing models (graphnfn.paramshare.ProbeChannels): the same
activations the graph models read, on unscaled weights, and every model keeps its group."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import converters
import graphnfn
from graphnfn import paramshare as ps
from graphnfn.features import ProbeFeatures
from graphnfn.graph import NodeType
from graphnfn.models import node_layers
from graphnfn.training import WeightScaler
from test_paramshare_groups import act, max_rel_diff, one_thread, random_space, sample_element, specs

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
# (model, options, group, hidden activation); NP's input permutations are no symmetry of a network
# run on fixed probe inputs, so with probes every model keeps permutations of hidden neurons only
CASES = [
    ("nfn-np", {"io_embed": False}, "hnp", "sine"), ("nfn-hnp", {}, "hnp", "tanh"), ("nft", {"heads": 2}, "hnp", "sine"),
    ("monomial", {}, "scale", "relu"), ("monomial", {}, "sign", "sine"), ("magep", {}, "scale", "leaky_relu"),
    ("magep", {}, "sign", "tanh"), ("stat", {}, "hnp", "relu"),
]


def nets():
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(2, 8), graphnfn.Sine(3.0), nn.Linear(8, 6), graphnfn.Sine(3.0), nn.Linear(6, 1)),
            nn.Sequential(nn.Linear(2, 8), graphnfn.Sine(3.0), nn.Linear(8, 6), graphnfn.Sine(3.0), nn.Linear(6, 1))]


def test_bias_channels_hold_the_activations_the_graph_models_read():
    """Neuron by neuron, ProbeChannels' activations equal graphnfn.features.ProbeFeatures' on the
    converted graphs (hidden neurons after their activation, outputs before), scaled inputs or not."""
    modules = nets()
    probes = torch.randn(5, 2)
    space = ps.concat([converters.to_weight_space(m) for m in modules], 0)
    batch = graphnfn.collate([converters.to_graph(m) for m in modules])
    graph_acts = ProbeFeatures(probes=probes)(batch.x, batch.edge_index, batch.edge_attr, batch.node_type,
                                              batch.edge_type, batch.layer, node_layers(batch))
    scaler = WeightScaler([(space, torch.zeros(2))])
    scaled = scaler((space, torch.zeros(2)))[0]
    for inputs, scales in ((space, None), (scaled, scaler.scales)):
        probe = ps.ProbeChannels(space.spec, probes, act_param=3.0, scales=scales)
        out = probe(inputs)
        for l, b in enumerate(out.biases):
            assert b.shape == (2, 1 + 5, space.spec.neurons[l + 1])
            want = graph_acts[(batch.layer == l + 1) & (batch.node_type != NodeType.INPUT)]
            torch.testing.assert_close(b[:, 1:].transpose(1, 2).reshape(-1, 5), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b[:, :1], inputs.biases[l])
        assert all(w[:, 1:].abs().sum() == 0 and torch.equal(w[:, :1], v) for w, v in zip(out.weights, inputs.weights))
    assert not torch.allclose(scaled.weights[0], space.weights[0])  # the scaler did change the inputs


@settings(max_examples=6)
@given(specs(max_layers=3, max_width=3, kinds=("mlp",)), st.integers(0, 10**6))
@pytest.mark.parametrize("name, extra, group, activation", CASES)
@pytest.mark.parametrize("readout", ["invariant", "equivariant"])
def test_models_with_probes_respect_their_group(name, extra, group, activation, readout, spec, seed):
    torch.manual_seed(seed)
    spec = spec._replace(activations=(activation,) * (spec.num_layers - 1))
    opts = extra if name == "stat" else {"hidden": 4, "head_hidden": 8, **extra}
    fourier = 0 if group == "scale" else 4
    model = ps.build(name, spec, d_out=3, readout=readout, fourier=fourier, probes=torch.randn(4, spec.neurons[0]),
                     **opts).double()
    assert model.encoding.endswith(" + activations at 4 probes")
    ws = random_space(spec, 2, 1, seed)
    g = sample_element(spec, group, seed + 1)
    out, moved = model(ws), model(act(ws, *g))
    if readout == "invariant":
        assert max_rel_diff(moved, out) < 1e-9
    else:
        assert max_rel_diff(moved, act(out, *g)) < 1e-9


def test_probe_features_change_the_models_function():
    """The check above cannot pass on probes that are ignored: two networks that differ only in
    their probe activations give different outputs."""
    spec = ps.WeightSpaceSpec(((4, 2), (1, 4)), ((4,), (1,)), ("sine",))
    ws = random_space(spec, 1, 1, 0)
    torch.manual_seed(0)
    a = ps.build("nfn-hnp", spec, 2, probes=torch.randn(3, 2), probe_act_param=1.0).double()
    torch.manual_seed(0)
    b = ps.build("nfn-hnp", spec, 2, probes=torch.randn(3, 2), probe_act_param=30.0).double()
    assert max_rel_diff(a(ws), b(ws)) > 1e-6


def test_probes_refuse_what_they_cannot_run():
    mlp = ps.WeightSpaceSpec(((4, 2), (1, 4)), ((4,), (1,)), ("sine",))
    with pytest.raises(ValueError, match=r"nft.*activations are unknown"):
        ps.build("nft", mlp._replace(activations=None), 2, probes=torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"probes must be \[P, 2\]"):
        ps.build("nft", mlp, 2, probes=torch.randn(3, 5))
    with pytest.raises(ValueError, match="1 channel"):
        ps.build("nft", mlp, 2, in_channels=2, probes=torch.randn(3, 2))
    with pytest.raises(ValueError, match="'mixed'"):
        ps.build("nft", mlp._replace(activations=("mixed",)), 2, probes=torch.randn(3, 2))
    cnn = ps.WeightSpaceSpec(((4, 1, 3, 3), (1, 4)), ((4,), (1,)), ("relu",))
    with pytest.raises(ValueError, match="MLPs"):
        ps.build("nfn-hnp", cnn, 2, probes=torch.randn(3, 1))
