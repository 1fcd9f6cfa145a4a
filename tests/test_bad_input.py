"""Invariant 4: unsupported or damaged input fails loudly, naming what is wrong."""
import os
import pickle
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import converters
from converters import ConversionError, NonFiniteWeightError, UnsafeCheckpointError, UnsupportedModuleError


class _Payload:
    """Unpickling this runs os.system: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_with_code_is_refused_before_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"0.weight": torch.zeros(2, 2), "hook": _Payload(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(ConversionError, match="evil.pt"):
        converters.to_graph(path)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(nn.Sequential(nn.Linear(2, 2)), path)
    with pytest.raises(UnsafeCheckpointError, match="module.pth"):
        converters.to_graph(path)


def test_truncated_and_corrupt_files(tmp_path):
    sd = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).state_dict()
    torch.save(sd, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    save_file(dict(sd), str(tmp_path / "full.safetensors"))
    st = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) - 7])
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(200))
    (tmp_path / "noise.pth").write_bytes(os.urandom(200))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("cut.pt", "cut.safetensors", "noise.safetensors", "noise.pth", "empty.pt"):
        with pytest.raises(ConversionError, match=name.replace(".", r"\.")):
            converters.to_graph(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        converters.to_graph(tmp_path / "missing.pt")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ConversionError, match="suffix"):
        converters.to_graph(tmp_path / "weights.npz")


def test_checkpoint_without_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ConversionError, match="no state_dict"):
        converters.to_graph(tmp_path / "meta.pt")


def test_inconsistent_shapes_name_the_parameter(tmp_path):
    sd = {"0.weight": torch.randn(4, 3), "0.bias": torch.randn(4), "1.weight": torch.randn(2, 5)}
    with pytest.raises(ConversionError, match=r"1\.weight"):
        converters.to_graph(sd)
    with pytest.raises(ConversionError, match=r"0\.bias"):
        converters.to_graph({"0.weight": torch.randn(4, 3), "0.bias": torch.randn(5)})
    with pytest.raises(ConversionError, match=r"conv\.weight"):
        converters.to_graph({"conv.weight": torch.randn(4, 3, 3, 3)})
    with pytest.raises(ConversionError, match=r"1\.bias"):
        converters.to_graph({"1.bias": torch.randn(4)})
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match=r"bad\.pt: 1\.weight"):
        converters.to_graph(tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="lr"):
        converters.to_graph({"0.weight": torch.randn(2, 2), "lr": 0.1})
    with pytest.raises(ConversionError, match=r"0\.weight.*int64"):
        converters.to_graph({"0.weight": torch.ones(2, 2, dtype=torch.long)})


def test_module_shape_mismatch_names_the_module():
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), act=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(10, 2)))
    with pytest.raises(ConversionError, match=r"fc\.weight"):
        converters.to_graph(model)
    with pytest.raises(ConversionError, match=r"1\.weight"):
        converters.to_graph(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weights_are_an_error_unless_allowed(bad):
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 4), act=nn.ReLU(), fc2=nn.Linear(4, 2)))
    with torch.no_grad():
        model.fc2.bias[1] = bad
    with pytest.raises(NonFiniteWeightError, match=r"fc2\.bias"):
        converters.to_graph(model)
    g = converters.to_graph(model, allow_nonfinite=True)
    assert converters.from_graph(g)["fc2.bias"][1].item() != 0


class Gated(nn.Module):
    """A product of two computed values (gating): residual sums convert, this does not."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x))


class FunctionalWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2))

    def forward(self, x):
        return x @ self.w


@pytest.mark.parametrize("model, where", [
    (nn.Sequential(OrderedDict(fc=nn.Linear(4, 8), rnn=nn.LSTM(8, 8))), "rnn"),
    (nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.Transformer())), "1.1"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU()), "groups"),
    (nn.Sequential(nn.Conv3d(2, 4, 3)), "Conv3d"),
    (nn.Sequential(nn.Linear(3, 3), nn.Unflatten(1, (3, 1))), "Unflatten"),
    (nn.Sequential(nn.Linear(3, 3), Gated()), r"fx node 'mul'.*test_bad_input\.py"),
    (FunctionalWeight(), "fx node"),
    (nn.Sequential(nn.ReLU()), "Linear, Conv or BatchNorm"),
    (nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Tanh(), nn.Linear(3, 1)), "two activations"),
])
def test_unsupported_modules_are_named(model, where):
    with pytest.raises(ConversionError, match=where):
        converters.to_graph(model)


def test_unsupported_module_error_is_also_a_type_error():
    with pytest.raises(TypeError):
        converters.to_graph(nn.Sequential(nn.LSTM(2, 2)))
    with pytest.raises(UnsupportedModuleError):
        converters.to_graph(nn.Sequential(nn.LSTM(2, 2)))
    with pytest.raises(TypeError, match="int"):
        converters.to_graph(42)


class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_shared_weights():
    # a Sequential lists a shared module under each index, as its state_dict does
    fc = nn.Linear(3, 3)
    model = nn.Sequential(fc, nn.ReLU(), fc)
    back = converters.from_graph(converters.to_graph(model))
    assert list(back) == list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # a traced module calling one layer twice has one key for two layers: refused
    with pytest.raises(ConversionError, match="two layers"):
        converters.to_graph(CalledTwice())


def test_tampered_graph_does_not_fold_back():
    g = converters.to_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    g.neuron[3] = g.neuron[4]  # two hidden nodes now claim the same neuron
    with pytest.raises(ConversionError, match="exactly once"):
        converters.from_graph(g)
