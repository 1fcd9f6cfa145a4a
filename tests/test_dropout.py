"""``dropout``, the regulariser both families take through :func:`graphnfn.registry.build`:
it changes training only. In eval mode a model built with it computes exactly what the same
model built without it computes (same initial weights), so its symmetries are those the
layer tests prove; in train mode it drops units, so two passes differ."""
import pytest
import torch
from torch import nn

import converters
import graphnfn
from graphnfn.registry import GRAPH_MODELS, PROBE_MLP, build

# tanh hidden neurons so that every model of both families (monomial's sign group too) takes them
NETS = [nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(3)]
MODELS = ["pna", "transformer", "sign-gnn", "nfn-hnp", "nft", "monomial", "magep", "stat", "flat-mlp", PROBE_MLP]
PROBES = torch.linspace(-1, 1, 12).view(6, 2)  # probe-mlp reads the networks' outputs at these inputs


def sample(name: str):
    if name in GRAPH_MODELS + (PROBE_MLP,):
        return graphnfn.collate([converters.to_graph(m) for m in NETS])
    return graphnfn.paramshare.concat([converters.to_weight_space(m) for m in NETS], 0)


def built(name: str, dropout: float, readout: str = "invariant"):
    torch.manual_seed(0)
    return build(name, sample(name), 3, readout, d_hidden=8, n_layers=2, heads=2, fourier=4, dropout=dropout,
                 probe_inputs=PROBES if name == PROBE_MLP else None)


@pytest.mark.parametrize("name", MODELS)
def test_dropout_changes_training_only(name):
    x = sample(name)
    plain, dropped = built(name, 0.0).eval(), built(name, 0.5).eval()
    for a, b in zip(plain.parameters(), dropped.parameters(), strict=True):
        assert torch.equal(a, b), "dropout must not change the initial weights"
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in dropped.modules())
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in plain.modules())
    torch.testing.assert_close(dropped(x), plain(x), rtol=0, atol=0)
    dropped.train()
    torch.manual_seed(1)
    first = dropped(x)
    torch.manual_seed(2)
    assert not torch.equal(first, dropped(x)), "in training, dropout must drop"


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_graph_models_drop_in_the_equivariant_readout_too(name):
    model = built(name, 0.5, readout="equivariant").train()
    x = sample(name)
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_build_refuses_a_rate_outside_0_1(dropout):
    with pytest.raises(ValueError, match=f"dropout must be in \\[0, 1\\), got {dropout}"):
        built("pna", dropout)
