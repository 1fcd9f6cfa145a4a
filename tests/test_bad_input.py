"""Invariant 4: unsupported or damaged input fails loudly, naming what is wrong."""
import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import converters
from converters import ConversionError, NonFiniteWeightError, UnsafeCheckpointError, UnsupportedModuleError
from converters import CheckpointNotFoundError
from graphnfn import cli
from nets import assert_bitwise_equal


class _Payload:
    """Unpickling this runs os.system: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer, name", [
    ("torch", "evil.pt"), ("legacy", "evil.pth"), ("pickle", "evil.pt"), ("pickle", "evil.bin"), ("pickle2", "evil.ckpt")])
def test_pickle_with_code_is_refused_before_running(tmp_path, writer, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    payload = {"0.weight": torch.zeros(2, 2), "hook": _Payload(marker)}
    if writer in ("torch", "legacy"):
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    else:  # a plain pickle, not a torch archive: still refused as code, naming what it would call
        path.write_bytes(pickle.dumps(payload, protocol=2 if writer == "pickle2" else pickle.DEFAULT_PROTOCOL))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=rf"{name.replace('.', '[.]')}: refused, nothing was run.*system"):
        converters.to_graph(path)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(nn.Sequential(nn.Linear(2, 2)), path)
    with pytest.raises(UnsafeCheckpointError, match="module.pth"):
        converters.to_graph(path)


def _mlp_state_dict():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).state_dict()


def _zip_without_member(data: bytes, suffix: str) -> bytes:
    """A torch.save archive with the member ending in ``suffix`` left out."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith(suffix):
                zout.writestr(info, zin.read(info))
    return out.getvalue()


DAMAGED = {  # file name -> (bytes from a valid .pt and .safetensors, the reason the error gives)
    "empty.pt": (lambda pt, st: b"", "the file is empty"),
    "empty.safetensors": (lambda pt, st: b"", "the file is empty"),
    "cut.pt": (lambda pt, st: pt[: len(pt) // 2], "truncated or corrupt"),
    "noise.pth": (lambda pt, st: bytes(range(256)) * 2, "truncated or corrupt"),
    "member.pt": (lambda pt, st: _zip_without_member(pt, "/data/0"), "data/0"),
    "cut.safetensors": (lambda pt, st: st[: len(st) - 7], "truncated or corrupt"),
    "header.safetensors": (lambda pt, st: st[:8] + b"{{{{" + st[12:], "header"),
    "huge.safetensors": (lambda pt, st: struct.pack("<Q", 2 ** 62) + st[8:], "header too large"),
    "weights.npz": (lambda pt, st: pt, "unknown checkpoint suffix '.npz'"),
    "weights": (lambda pt, st: pt, "unknown checkpoint suffix ''"),
}


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_files_name_the_file_in_one_line(tmp_path, name):
    sd = _mlp_state_dict()
    torch.save(sd, tmp_path / "full.pt")
    save_file(dict(sd), str(tmp_path / "full.safetensors"))
    make, reason = DAMAGED[name]
    (tmp_path / name).write_bytes(make((tmp_path / "full.pt").read_bytes(), (tmp_path / "full.safetensors").read_bytes()))
    for convert in (converters.to_graph, converters.to_weight_space):
        with pytest.raises(ConversionError) as info:
            convert(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and reason in message and "\n" not in message
        assert "internal miniz error" not in message  # torch's advice is cut after the reason


def test_missing_paths_and_directories(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="missing.pt' does not exist"):
        converters.to_graph(tmp_path / "missing.pt")
    assert issubclass(CheckpointNotFoundError, FileNotFoundError) and issubclass(CheckpointNotFoundError, ConversionError)
    (tmp_path / "run.pt").mkdir()
    for directory in (tmp_path, tmp_path / "run.pt"):
        with pytest.raises(ConversionError, match=f"{directory}' is a directory"):
            converters.to_weight_space(directory)


def test_paths_as_str_pathlib_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    sd = _mlp_state_dict()
    torch.save(sd, tmp_path / "mlp.pt")
    for path in (str(tmp_path / "mlp.pt"), tmp_path / "mlp.pt", "~/mlp.pt", Path("~/mlp.pt")):
        assert_bitwise_equal(converters.from_graph(converters.to_graph(path)), sd)
        assert converters.to_weight_space(path).weights[0].shape == (1, 1, 8, 2)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "module", "ema", "model_ema", "state_dict_ema"])
@pytest.mark.parametrize("prefix", ["", "module.", "model."])
def test_nested_and_prefixed_state_dicts_round_trip_with_their_keys(tmp_path, key, prefix):
    """Lightning / DeepSpeed / timm layouts: the state_dict is found under its key; the
    DataParallel or Lightning prefix is kept, so from_graph gives back the file's keys."""
    sd = {prefix + k: v.to(dtype) for (k, v), dtype in zip(_mlp_state_dict().items(),
                                                           (torch.float16, torch.bfloat16, torch.float64, torch.float32))}
    torch.save({key: sd, "epoch": 3, "global_step": 10, "optimizer_states": [{"param_groups": [{"lr": 0.1}]}],
                "hyper_parameters": {"model": "mlp"}}, tmp_path / "last.ckpt")
    back = converters.from_graph(converters.to_graph(tmp_path / "last.ckpt"))
    assert list(back) == list(sd)
    assert_bitwise_equal(back, sd)


def test_model_is_preferred_over_ema_and_key_picks_one(tmp_path):
    sd = _mlp_state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    torch.save({"ema": ema, "model": sd, "run": {"checkpoint": {"model": ema}}}, tmp_path / "both.pt")
    assert_bitwise_equal(converters.load_checkpoint(tmp_path / "both.pt"), sd)
    assert_bitwise_equal(converters.load_checkpoint(tmp_path / "both.pt", key="ema"), ema)
    with pytest.raises(ConversionError, match=r"both\.pt.*'run'.*no state_dict found"):
        converters.load_checkpoint(tmp_path / "both.pt", key="run")
    with pytest.raises(ConversionError, match=r"both\.pt: has no entry 'emma'"):
        converters.load_checkpoint(tmp_path / "both.pt", key="emma")


@pytest.mark.parametrize("content, match", [
    ({"0.weight": torch.ones(2, 2), "epoch": 3, "note": None}, r"x\.pt: 2 entries are not tensors: \{'epoch': 'int', 'note': 'NoneType'\}"),
    ({"state_dict": {"0.weight": torch.ones(2, 2), "step": "x"}, "epoch": 1}, r"x\.pt\['state_dict'\]: 1 entry is not a tensor: \{'step': 'str'\}"),
    ({"0._packed_params.dtype": torch.qint8, "0.scale": torch.ones(())}, "quantized"),
    ({0: torch.ones(2, 2)}, r"x\.pt: key 0 \(of type int\)"),
    ({"epoch": 3, "lr": 0.1}, r"x\.pt: no state_dict found"),
    ({}, r"x\.pt: no state_dict found"),
    (torch.ones(3, 3), r"x\.pt: holds a Tensor, not a state_dict"),
    ([{"0.weight": torch.ones(2, 2)}], r"x\.pt: holds a list"),
])
def test_checkpoints_that_are_not_state_dicts_name_the_entries(tmp_path, content, match):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(ConversionError, match=match):
        converters.to_graph(tmp_path / "x.pt")


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


@pytest.mark.parametrize("weight, message", [
    (torch.ones(2, 2, dtype=torch.float8_e4m3fn), r"0\.weight.*float8_e4m3fn"),
    (torch.ones(2, 2, dtype=torch.complex64), r"0\.weight.*complex64"),
    (torch.ones(0, 2), r"0\.weight.*empty \(shape \(0, 2\)\)"),
    (torch.ones(0, 0), r"0\.weight.*empty"),
])
def test_unusual_weight_tensors_are_named(weight, message):
    with pytest.raises(ConversionError, match=message):
        converters.to_graph({"0.weight": weight})


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
    (nn.Sequential(nn.ConvTranspose2d(2, 4, 3)), "ConvTranspose2d"),
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


@pytest.mark.parametrize("recurrent", [nn.LSTM(2, 3, num_layers=2), nn.GRU(2, 3, bidirectional=True),
                                       nn.RNN(2, 3, bias=False), nn.LSTM(2, 4, proj_size=2)])
def test_recurrent_state_dicts_are_named(recurrent):
    # the state_dict alone (not the module): its keys must not be mistaken for Linear weights
    with pytest.raises(UnsupportedModuleError, match="'weight_ih_l0'.*LSTM/GRU/RNN state_dict: recurrent layers"):
        converters.to_graph(recurrent.state_dict())


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


@pytest.mark.parametrize("argv, match", [
    (["inspect", "{d}/noise.pt"], r"noise\.pt: cannot be read as a torch checkpoint"),
    (["convert", "{d}/evil.pt", "-o", "{d}/g.safetensors"], r"evil\.pt: refused, nothing was run"),
    (["convert", "{d}/missing.pt", "-o", "{d}/g.safetensors"], r"missing\.pt' does not exist"),
    (["convert", "{d}/mlp.pt", "-o", "{d}/no/such/dir/g.safetensors"], r"output directory '.*no/such/dir' does not exist"),
    (["draw", "{d}/mlp.pt", "-o", "{d}"], "is a directory"),
    (["convert", "{d}/mlp.pt", "-o", "{d}/g.png"], r"output '.*g\.png': convert writes a graph file, name it "
                                                   r"\*\.safetensors \(not \.png\)"),
    (["draw", "{d}/mlp.pt", "-o", "{d}/g.safetensors"], r"draw writes an image, name it with one of the suffixes "
                                                        r".*\.png.*\.svg.* \(not \.safetensors\)"),
    (["draw", "{d}/mlp.pt", "-o", "{d}/g"], r"\.pdf.* \(it has no suffix\)"),
    (["inspect", "{d}/nan.pt"], r"nan\.pt: .*'0\.weight' holds NaN or Inf \(--allow-nonfinite to accept\)$"),
    (["inspect", "{d}/lstm.pt"], r"lstm\.pt: state_dict entry 'weight_ih_l0' .*looks like an LSTM/GRU/RNN state_dict: "
                                 "recurrent layers are not supported"),
])
def test_cli_prints_one_line_and_exits_nonzero(tmp_path, capsys, argv, match):
    marker = tmp_path / "pwned"
    torch.save({"0.weight": torch.zeros(2, 2), "hook": _Payload(marker)}, tmp_path / "evil.pt")
    (tmp_path / "noise.pt").write_bytes(b"\x80\x02garbage" * 10)
    torch.save(_mlp_state_dict(), tmp_path / "mlp.pt")
    torch.save({**_mlp_state_dict(), "0.weight": torch.full((8, 2), float("nan"))}, tmp_path / "nan.pt")
    torch.save(nn.LSTM(2, 3).state_dict(), tmp_path / "lstm.pt")
    assert cli.main([a.format(d=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"graphnfn {argv[0]}: error: ")
    assert re.search(match, err.rstrip("\n")), err
    assert not marker.exists() and not any((tmp_path / name).exists() for name in ("g.safetensors", "g.png", "g"))


def test_cli_unexpected_errors_are_one_line_unless_traceback(tmp_path, capsys, monkeypatch):
    torch.save(_mlp_state_dict(), tmp_path / "mlp.pt")

    def broken(*args, **kwargs):
        raise IndexError("index 0 is out of bounds\nfor dimension 0")

    monkeypatch.setattr(converters, "to_graph", broken)
    assert cli.main(["inspect", str(tmp_path / "mlp.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected IndexError on" in err and "mlp.pt" in err and "--traceback" in err
    with pytest.raises(IndexError):
        cli.main(["inspect", str(tmp_path / "mlp.pt"), "--traceback"])
