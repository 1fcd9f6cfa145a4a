"""The monomial group follows the network: paramshare.scaling_of and the `monomial` / `magep`
models on real torch networks converted with converters.to_weight_space (float64). A
function-preserving transformation (permutation x the group's scalings or sign flips) leaves
the invariant output unchanged and moves the equivariant output with it; a function-changing
one changes the output; Monomial-NFN does not see uncoupled permutations."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import converters
from graphnfn import Sine
from graphnfn import paramshare as ps
from test_paramshare_groups import act, max_rel_diff, one_thread, sample_element

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
SMALL = {"hidden": 4, "head_hidden": 8}
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh, "sine": lambda: Sine(3.0)}
GROUP = {"relu": "scale", "leaky_relu": "scale", "tanh": "sign", "sine": "sign"}


def make_net(activation: str, seed: int) -> nn.Sequential:
    """A float64 network with two hidden layers of random widths (2-4): an MLP for even seeds,
    for odd seeds a Conv1d stack with global average pooling before its linear head."""
    gen = torch.Generator().manual_seed(seed)
    n = [int(w) for w in torch.randint(2, 5, (4,), generator=gen)]
    torch.manual_seed(seed)
    fn = ACTIVATIONS[activation]
    if seed % 2 == 0:
        net = nn.Sequential(nn.Linear(n[0], n[1]), fn(), nn.Linear(n[1], n[2]), fn(), nn.Linear(n[2], n[3]))
    else:
        net = nn.Sequential(nn.Conv1d(n[0], n[1], 3, padding=1), fn(), nn.Conv1d(n[1], n[2], 3, padding=1), fn(),
                            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(n[2], n[3]))
    return net.double()


def with_weights(net: nn.Sequential, ws: ps.WeightSpace) -> nn.Sequential:
    """A copy of ``net`` holding sample 0, channel 0 of ``ws``."""
    net = copy.deepcopy(net)
    layers = [m for m in net if isinstance(m, (nn.Linear, nn.Conv1d))]
    with torch.no_grad():
        for m, w, b in zip(layers, ws.weights, ws.biases):
            m.weight.copy_(w[0, 0])
            m.bias.copy_(b[0, 0])
    return net


def net_input(net: nn.Sequential) -> torch.Tensor:
    first = net[0]
    shape = (first.in_features,) if isinstance(first, nn.Linear) else (first.in_channels, 6)
    return torch.randn(7, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def transformed(net: nn.Sequential, perms, diags) -> tuple[nn.Sequential, ps.WeightSpace, float]:
    """``net`` acted on by (perms, diags), its converted weight space, and how far its
    function moved (max relative difference of the outputs)."""
    moved = with_weights(net, act(converters.to_weight_space(net), perms, diags))
    x = net_input(net)
    return moved, converters.to_weight_space(moved), max_rel_diff(net(x), moved(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["monomial", "magep"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_function_preserving_transformations_keep_the_output(activation, name, seed):
    net = make_net(activation, seed)
    ws = converters.to_weight_space(net)
    assert ps.scaling_of(ws.spec) == GROUP[activation]
    g = sample_element(ws.spec, GROUP[activation], seed)
    _, moved, function_moved = transformed(net, *g)
    assert function_moved < 1e-10
    torch.manual_seed(seed)
    invariant = ps.build(name, ws.spec, 3, **SMALL).double()
    equivariant = ps.build(name, ws.spec, 2, readout="equivariant", **SMALL).double()
    assert max_rel_diff(invariant(moved), invariant(ws)) < 1e-9
    assert max_rel_diff(equivariant(moved), act(equivariant(ws), *g)) < 1e-9


@pytest.mark.parametrize("name", ["monomial", "magep"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_function_changing_transformations_change_the_output(activation, name):
    """Scaling one neuron by 3 (not a sign flip) on sine/tanh networks, flipping one neuron's
    sign (not a positive scaling) on ReLU/LeakyReLU networks."""
    net = make_net(activation, 0)
    ws = converters.to_weight_space(net)
    perms = [torch.arange(n) for n in ws.spec.neurons]
    diags = [torch.ones(n, dtype=torch.float64) for n in ws.spec.neurons]
    diags[1][0] = 3.0 if GROUP[activation] == "sign" else -1.0
    _, changed, function_moved = transformed(net, perms, diags)
    assert function_moved > 1e-3
    torch.manual_seed(0)
    model = ps.build(name, ws.spec, 3, **SMALL).double()
    assert max_rel_diff(model(changed), model(ws)) > 1e-6


@pytest.mark.parametrize("layers, where, what", [
    ((nn.GELU(), nn.GELU()), "hidden layer 1", "applies 'gelu'"),
    ((nn.ReLU(), nn.Sigmoid()), "hidden layer 2", "applies 'sigmoid'"),
    ((nn.ReLU(), nn.Tanh()), "hidden layer 2", r"applies 'tanh', which allows only \['sign'\]"),
])
def test_networks_without_one_monomial_group_are_refused_unless_overridden(layers, where, what):
    net = nn.Sequential(nn.Linear(2, 3), layers[0], nn.Linear(3, 3), layers[1], nn.Linear(3, 1))
    spec = converters.to_weight_space(net).spec
    with pytest.raises(ValueError, match=rf"{where} \(between weights\[\d\] and weights\[\d\]\) {what}"):
        ps.scaling_of(spec)
    with pytest.raises(ValueError, match=rf"build\('magep'\): {where}"):
        ps.build("magep", spec, 1)
    ws = converters.to_weight_space(net)
    assert ps.build("monomial", spec, 1, scaling="sign")(ws).shape == (1, 1)


def test_the_group_of_pooled_cnns_unknown_and_mixed_spaces():
    def cnn(fn, pool):
        return nn.Sequential(nn.Conv2d(1, 2, 3), fn(), pool(2), nn.Conv2d(2, 2, 3), fn(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(2, 1))

    assert ps.scaling_of(converters.to_weight_space(cnn(nn.ReLU, nn.MaxPool2d)).spec) == "scale"
    assert ps.scaling_of(converters.to_weight_space(cnn(nn.Tanh, nn.AvgPool2d)).spec) == "sign"
    with pytest.raises(ValueError, match="hidden layer 1 .* applies 'tanh\\+max_pool', which is neither odd"):
        ps.scaling_of(converters.to_weight_space(cnn(nn.Tanh, nn.MaxPool2d)).spec)
    relu, tanh = (converters.to_weight_space(cnn(fn, nn.AvgPool2d)) for fn in (nn.ReLU, nn.Tanh))
    with pytest.raises(ValueError, match="hidden layer 1 .* differs between the networks of the batch"):
        ps.scaling_of(ps.concat([relu, tanh], 0).spec)
    with pytest.raises(ValueError, match="records no activations"):
        ps.scaling_of(relu.spec._replace(activations=None))
    model = ps.build("monomial", relu.spec, 1)  # built for ReLU networks: refuses tanh ones
    with pytest.raises(ValueError, match=r"'monomial': the networks' hidden activations \('tanh', 'tanh'\) differ"):
        model(tanh)


def uncoupled(ws: ps.WeightSpace, layer: int, perm: torch.Tensor) -> ps.WeightSpace:
    """Hidden neuron layer ``layer`` permuted by ``perm`` on its incoming side only (rows of
    weights[layer - 1] and biases[layer - 1]); the outgoing columns of weights[layer] stay."""
    weights, biases = list(ws.weights), list(ws.biases)
    weights[layer - 1], biases[layer - 1] = weights[layer - 1][:, :, perm], biases[layer - 1][:, :, perm]
    return ws._replace(weights=tuple(weights), biases=tuple(biases))


@pytest.mark.parametrize("activation, layer, blind", [
    ("relu", 1, True), ("relu", 2, True), ("tanh", 1, True),
    ("tanh", 2, False),  # sign flips, last hidden layer: its outgoing columns mix with the incoming biases
])
def test_monomial_nfn_does_not_see_uncoupled_permutations(activation, layer, blind):
    """What the paper's Monomial-NFN also cannot see (see graphnfn.paramshare.models): a
    different function, the same invariant output. MAGEP-NFN's weight products do see it."""
    net = make_net(activation, 0)
    ws = converters.to_weight_space(net)
    moved = uncoupled(ws, layer, torch.arange(ws.spec.neurons[layer]).roll(1))
    x = net_input(net)
    assert max_rel_diff(net(x), with_weights(net, moved)(x)) > 1e-3
    torch.manual_seed(0)
    monomial = ps.build("monomial", ws.spec, 3, **SMALL).double()
    assert (max_rel_diff(monomial(moved), monomial(ws)) < 1e-9) == blind
    magep = ps.build("magep", ws.spec, 3, **SMALL).double()
    assert max_rel_diff(magep(moved), magep(ws)) > 1e-6
