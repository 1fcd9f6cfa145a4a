"""probe-mlp, the yardstick of probe features: it reads each network's real outputs on the
probe inputs (through the graph, on unscaled weights) and nothing else."""
import pytest
import torch
from torch import nn

import converters
import graphnfn
from graphnfn.registry import build, family
from graphnfn.training import WeightScaler


def nets():
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(2, 8), graphnfn.Sine(3.0), nn.Linear(8, 1)),
            nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))]


def test_rendered_outputs_are_the_networks_outputs_even_on_a_scaled_batch():
    modules = nets()
    batch = graphnfn.collate([converters.to_graph(m) for m in modules])
    batch.y = torch.zeros(2, dtype=torch.long)
    probes = torch.randn(6, 2)
    model = build("probe-mlp", batch, d_out=4, probe_inputs=probes)
    scaled = WeightScaler([batch])(batch)
    assert not torch.allclose(scaled.edge_attr, batch.edge_attr)  # the scaler did change the inputs
    for inputs in (batch, scaled):
        rendered = model.rendered(inputs).view(2, model.max_outputs, 6)
        for b, m in enumerate(modules):
            with torch.no_grad():
                want = m(probes).T  # [outputs, P]
            torch.testing.assert_close(rendered[b, :want.size(0)], want, rtol=1e-5, atol=1e-5)
            assert rendered[b, want.size(0):].abs().sum() == 0
    assert model(batch).shape == (2, 4) and family("probe-mlp") == "graph"
    assert model.encoding == "outputs at 6 probes"


def test_probe_mlp_needs_probes_and_an_invariant_readout():
    batch = graphnfn.collate([converters.to_graph(m) for m in nets()])
    with pytest.raises(ValueError, match="probe inputs"):
        build("probe-mlp", batch, d_out=2)
    with pytest.raises(ValueError, match="invariant readout"):
        build("probe-mlp", batch, d_out=1, readout="equivariant", probe_inputs=torch.randn(4, 2))


@pytest.mark.parametrize("name", ["pna", "sign-gnn"])
def test_a_graph_models_encoding_names_its_probe_features(name):
    """Result tables print ``model.encoding``: a row that read probe activations must say so."""
    batch = graphnfn.collate([converters.to_graph(m) for m in nets()])
    plain = build(name, batch, d_out=2, d_hidden=8, n_layers=1, fourier=4)
    probed = build(name, batch, d_out=2, d_hidden=8, n_layers=1, fourier=4, probe_inputs=torch.randn(5, 2))
    assert "probe" not in plain.encoding
    assert probed.encoding == plain.encoding + " + activations at 5 probes"
