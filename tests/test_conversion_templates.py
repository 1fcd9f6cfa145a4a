"""Zoo conversion by templates (graphnfn.zoo.templates): bit for bit the full conversion,
for random architectures and both views; NaN still refused; a conversion that does not
store values as they are is noticed and converted in full."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import converters
import graphnfn
from graphnfn.zoo import graph_loader, weight_space_loader
from graphnfn.zoo.templates import ConversionTemplates, _same

ACTS = [nn.ReLU, nn.Tanh, graphnfn.Sine, nn.GELU]


def mlp(widths: list[int], act, dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def cnn(channels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, channels, 3), nn.BatchNorm2d(channels), nn.ReLU(),
                        nn.Conv2d(channels, channels, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(channels, 3))
    with torch.no_grad():  # running statistics that are not the defaults
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=5), act=st.sampled_from(ACTS),
       dtype=st.sampled_from([torch.float32, torch.float64]), view=st.sampled_from(["graph", "weight_space"]))
def test_templates_give_the_full_conversion_bit_for_bit(widths, act, dtype, view):
    convert = converters.to_graph if view == "graph" else converters.to_weight_space
    templates = ConversionTemplates(convert)
    nets = [mlp(widths, act, dtype, seed) for seed in range(4)]
    for net in nets:
        assert _same(templates("arch", net), convert(net))
    assert templates.templates["arch"] is not None  # served by copying, not by converting each


@pytest.mark.parametrize("make", [lambda s: cnn(3, s), lambda s: nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)])
def test_templates_of_cnns_with_norms_and_transformer_blocks(make):
    templates = ConversionTemplates(converters.to_graph)
    for seed in range(3):
        torch.manual_seed(seed)
        net = make(seed)
        assert _same(templates("arch", net), converters.to_graph(net))
    assert templates.templates["arch"] is not None


def test_non_finite_weights_are_still_refused():
    templates = ConversionTemplates(converters.to_graph)
    for seed in range(2):
        templates("arch", mlp([2, 4, 1], nn.ReLU, torch.float32, seed))
    bad = mlp([2, 4, 1], nn.ReLU, torch.float32, 5)
    with torch.no_grad():
        bad[0].weight[1, 0] = float("nan")
    with pytest.raises(converters.ConversionError, match="NaN or Inf"):
        templates("arch", bad)


def test_a_conversion_that_changes_values_is_converted_in_full():
    def doubled(module):
        ws = converters.to_weight_space(module)
        return ws._replace(weights=tuple(2 * w for w in ws.weights))

    templates = ConversionTemplates(doubled)
    nets = [mlp([3, 5, 2], nn.ReLU, torch.float64, seed) for seed in range(3)]
    for net in nets:
        assert _same(templates("arch", net), doubled(net))
    assert templates.templates["arch"] is None


def test_zoo_loaders_serve_what_direct_conversion_gives(tmp_path):
    from graphnfn.zoo import make_siren_zoo, open_zoo, siren_recipe

    make_siren_zoo(tmp_path / "zoo", dataset="digits", seed=0, limit=12, device="cpu", progress=False,
                   recipe=siren_recipe("digits", steps=5))
    zoo = open_zoo(tmp_path / "zoo")
    indices = zoo.indices("train")
    batch = next(iter(graph_loader(zoo, "train", batch_size=len(indices))))
    direct = graphnfn.collate([converters.to_graph(zoo.module(i)) for i in indices])
    for key in ("x", "edge_attr", "edge_index"):
        assert torch.equal(batch[key], direct[key])
    spaces, _ = next(iter(weight_space_loader(zoo, "train", batch_size=len(indices))))
    for i, got in zip(indices, zip(*spaces.weights)):
        assert all(torch.equal(a, b[0]) for a, b in zip(got, converters.to_weight_space(zoo.module(i)).weights))
