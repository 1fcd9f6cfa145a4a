"""The graphnfn command and graph files."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import converters
import graphnfn
from graphnfn import cli
from graphnfn.symmetries import describe_symmetries
from graphnfn.io import load_graph, save_graph
from nets import SmallCNN, assert_bitwise_equal, randomize_norms

REPO = Path(__file__).resolve().parents[1]


def _cnn():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2))
    randomize_norms(m, torch.Generator().manual_seed(0))
    return m


def test_graph_files_round_trip(tmp_path):
    m = _cnn()
    g = converters.to_graph(m)
    save_graph(g, tmp_path / "g.safetensors")
    back = load_graph(tmp_path / "g.safetensors")
    assert_bitwise_equal(converters.from_graph(back), m.state_dict())
    for key in ("x", "edge_index", "edge_attr", "node_type", "edge_type", "layer"):
        assert torch.equal(back[key], g[key])


def test_convert_inspect_draw(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    assert cli.main(["convert", str(tmp_path / "mlp.pt"), "-o", str(tmp_path / "mlp.safetensors")]) == 0
    assert_bitwise_equal(converters.from_graph(load_graph(tmp_path / "mlp.safetensors")), model.state_dict())
    for source in ("mlp.pt", "mlp.safetensors"):
        assert cli.main(["inspect", str(tmp_path / source)]) == 0
        out = capsys.readouterr().out
        assert "11 nodes, 30 edges" in out and "38 values" in out and "S_6" in out
    assert cli.main(["draw", str(tmp_path / "mlp.pt"), "-o", str(tmp_path / "mlp.png")]) == 0
    assert (tmp_path / "mlp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["inspect", str(tmp_path / "broken.pt")]) == 1
    assert "broken.pt" in capsys.readouterr().err


def test_symmetry_description_follows_activations():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3), nn.BatchNorm1d(3),
                          nn.Tanh(), nn.Linear(3, 1))
    lines = describe_symmetries(converters.to_graph(model))
    assert lines[0].endswith("S_4 x (R>0)^4")
    assert lines[1].endswith("S_3 x {+1,-1}^3")
    assert lines[2].endswith(": S_3")  # a BatchNorm follows: no sign flips through it


def test_a_saved_graph_loads_with_weights_only(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    g = converters.to_graph(model)
    torch.save(g, tmp_path / "g.pt")
    back = torch.load(tmp_path / "g.pt", weights_only=True)
    assert_bitwise_equal(converters.from_graph(back), model.state_dict())


def test_model_option_converts_any_architecture(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # --model imports tests.nets from the current directory
    torch.manual_seed(0)
    net = SmallCNN(channels=4)
    torch.save(net.state_dict(), tmp_path / "cnn.pt")
    assert cli.main(["inspect", str(tmp_path / "cnn.pt")]) == 1  # a state_dict alone reads as an MLP
    assert "name the architecture with --model pkg.module:Class" in capsys.readouterr().err
    model = ["--model", "tests.nets:SmallCNN", "--model-args", '{"channels": 4}']
    assert cli.main(["inspect", str(tmp_path / "cnn.pt"), *model]) == 0
    assert "S_4" in capsys.readouterr().out
    assert cli.main(["convert", str(tmp_path / "cnn.pt"), "-o", str(tmp_path / "cnn.safetensors"), *model]) == 0
    assert_bitwise_equal(converters.from_graph(load_graph(tmp_path / "cnn.safetensors")), net.state_dict())
    assert cli.main(["draw", str(tmp_path / "cnn.pt"), "-o", str(tmp_path / "cnn.svg"), *model]) == 0
    assert b"<svg" in (tmp_path / "cnn.svg").read_bytes()


@pytest.mark.parametrize("options, match", [
    (["--model", "no_such_package.nets:SmallCNN"], r"--model 'no_such_package\.nets:SmallCNN': cannot import "
                                                   r"'no_such_package\.nets': ModuleNotFoundError"),
    (["--model", "tests.nets:NoSuchNet"], r"--model 'tests\.nets:NoSuchNet': module 'tests\.nets' has no class"),
    (["--model", "tests.nets"], r"--model 'tests\.nets': expected pkg\.module:Class"),
    (["--model", "tests.nets:SmallCNN", "--model-args", "{channels: 4}"], r"--model-args '\{channels: 4\}' is not "
                                                                          "valid JSON"),
    (["--model", "tests.nets:SmallCNN", "--model-args", "[4]"], r"--model-args '\[4\]': expected a JSON object"),
    (["--model-args", "{}"], r"--model-args needs --model"),
    (["--model", "tests.nets:SmallCNN", "--model-args", '{"width": 4}'], r"--model 'tests\.nets:SmallCNN' with "
                                                                         r"--model-args \{'width': 4\}: TypeError"),
    (["--model", "tests.nets:SmallCNN"], r"cnn\.pt: does not fit --model SmallCNN: .*size mismatch for conv\.weight"),
    (["--model", "tests.nets:SmallCNN", "--model-args", '{"channels": 4}'],
     r"extra\.pt: does not fit --model SmallCNN: missing keys \['head\.bias'\], unexpected keys \['head\.offset'\]"),
])
def test_model_option_errors_name_the_argument_or_file(tmp_path, capsys, monkeypatch, options, match):
    monkeypatch.chdir(REPO)
    sd = SmallCNN(channels=4).state_dict()
    torch.save(sd, tmp_path / "cnn.pt")
    sd["head.offset"] = sd.pop("head.bias")
    torch.save(sd, tmp_path / "extra.pt")
    checkpoint = "extra.pt" if "extra" in match else "cnn.pt"
    assert cli.main(["inspect", str(tmp_path / checkpoint), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(match, err), err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"graphnfn {graphnfn.__version__}\n"


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`graphnfn inspect X | head -1`: the pipe is closed before the command writes."""
    torch.save(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).state_dict(), tmp_path / "mlp.pt")
    proc = subprocess.Popen([sys.executable, "-m", "graphnfn.cli", "inspect", str(tmp_path / "mlp.pt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and err == ""


def test_predict_prints_a_regressors_value(tmp_path, capsys, monkeypatch):
    """A regression model (e.g. predicted test accuracy of a CNN) prints its value; an editing
    model has no one prediction per network and is refused."""
    import graphnfn.trained

    class Regressor:
        readout, task, family, name = "invariant", "cnn_generalization", "paramshare", "nfn-hnp"

        def predict(self, networks):
            return torch.tensor([[0.25]])

    monkeypatch.setattr(graphnfn.trained, "load_model", lambda path: Regressor())
    torch.save(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).state_dict(), tmp_path / "mlp.pt")
    assert cli.main(["predict", "run", str(tmp_path / "mlp.pt")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'mlp.pt'}: 0.25\n"
    Regressor.readout = "equivariant"
    assert cli.main(["predict", "run", str(tmp_path / "mlp.pt")]) == 1
    assert "has an equivariant readout" in capsys.readouterr().err
