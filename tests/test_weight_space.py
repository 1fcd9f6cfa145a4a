"""converters.to_weight_space: the NFN input format."""
import pytest
import torch
from hypothesis import given
from torch import nn

import converters
from graphnfn import Sine
from graphnfn.paramshare import MIXED, WeightSpace, WeightSpaceSpec, check_spec, concat, randn_space
from graphnfn.training import WeightScaler
from graphnfn.zoo.cnn import make_cnn
from nets import mlps


@given(mlps(norms=False))
def test_mlp_weight_space_holds_the_parameters(model):
    ws = converters.to_weight_space(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert ws.spec.num_layers == len(linears) and ws.batch_size == 1 and ws.num_channels == 1
    for w, b, m in zip(ws.weights, ws.biases, linears):
        assert torch.equal(w[0, 0], m.weight.detach())
        assert torch.equal(b[0, 0], m.bias.detach() if m.bias is not None else torch.zeros(m.out_features))
    assert ws.spec.weight_shapes == tuple((m.out_features, m.in_features) for m in linears)


def test_cnn_weight_space_keeps_kernel_dims():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, (3, 2)), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    ws = converters.to_weight_space(model)
    assert [tuple(w.shape) for w in ws.weights] == [(1, 1, 4, 1, 3, 3), (1, 1, 6, 4, 3, 2), (1, 1, 10, 6)]
    assert [tuple(b.shape) for b in ws.biases] == [(1, 1, 4), (1, 1, 6), (1, 1, 10)]
    both = concat([ws, ws * 2.0], dim=0)
    assert both.batch_size == 2 and torch.equal(both.weights[1][1], 2 * ws.weights[1][0])
    assert torch.equal((both - both).weights[0], torch.zeros_like(both.weights[0]))
    assert concat([ws, ws], dim=1).num_channels == 2


@pytest.mark.parametrize("model, why", [
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), "BatchNorm"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1)), "Flatten"),
])
def test_layers_outside_a_weight_space_are_refused(model, why):
    with pytest.raises(converters.ConversionError, match=why):
        converters.to_weight_space(model)


def test_weight_space_from_a_file(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    ws = converters.to_weight_space(tmp_path / "mlp.pt")
    assert isinstance(ws, WeightSpace) and torch.equal(ws.weights[1][0, 0], model[2].weight.detach())


# ---- the activation record (what decides the monomial group) ----

@pytest.mark.parametrize("model, activations", [
    (nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.LeakyReLU(0.1), nn.Dropout(0.2),
                   nn.Linear(3, 1), nn.Sigmoid()), ("relu", "leaky_relu")),  # the output's map is no hidden layer's
    (nn.Sequential(nn.Linear(2, 3), Sine(30.0), nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1)), ("sine", "gelu")),
    (nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), ("identity",)),
    (nn.Sequential(nn.Linear(2, 1)), ()),
    # the zoo CNN: dropout and global average pooling between the last conv and the head are linear
    (make_cnn(activation="tanh"), ("tanh", "tanh", "tanh")),
    # max pooling keeps positive scalings but is not odd: it is recorded with the activation
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3), nn.ReLU(),
                   nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(3, 2)), ("tanh+max_pool", "relu+max_pool")),
])
def test_weight_space_records_the_hidden_activations(model, activations):
    ws = converters.to_weight_space(model)
    assert ws.activations == activations and ws.spec.activations == activations


def test_a_state_dict_has_unknown_activations():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert converters.to_weight_space(model.state_dict()).activations is None


def test_putting_spaces_together_keeps_the_record_sound():
    relu = converters.to_weight_space(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(),
                                                    nn.Linear(3, 1)))
    other = converters.to_weight_space(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(),
                                                     nn.Linear(3, 1)))
    unknown = relu._replace(activations=None)
    assert concat([relu, relu], 0).activations == ("relu", "relu")
    assert concat([relu, other], 0).activations == (MIXED, "relu")
    assert concat([relu, unknown], 0).activations is None  # the unknown network may differ
    assert concat([relu, unknown], 1).activations == ("relu", "relu")  # channels of the same networks
    assert (unknown + relu).activations == relu.map(torch.neg).activations == (relu * 2.0).activations == ("relu", "relu")
    assert randn_space(relu.spec, 2).activations == ("relu", "relu")
    scaled, _ = WeightScaler([(relu, torch.zeros(1))])((relu, torch.zeros(1)))
    assert scaled.activations == ("relu", "relu")


def test_check_spec_compares_activations_only_when_both_are_known():
    relu = converters.to_weight_space(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
    tanh = converters.to_weight_space(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match=r"model: the networks' hidden activations \('tanh',\) differ from \('relu',\)"):
        check_spec(tanh, relu.spec, "model")
    check_spec(tanh._replace(activations=None), relu.spec, "model")
    check_spec(tanh, relu.spec._replace(activations=None), "model")
    with pytest.raises(ValueError, match="one map per hidden neuron layer"):
        WeightSpaceSpec(((3, 2), (1, 3)), ((3,), (1,)), ("relu", "relu")).validate()
