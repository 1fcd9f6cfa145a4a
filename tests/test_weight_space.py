"""converters.to_weight_space: the NFN input format."""
import pytest
import torch
from hypothesis import given
from torch import nn

import converters
from graphnfn.paramshare import WeightSpace, concat
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
