"""The graphnfn command and graph files."""
import torch
from torch import nn

import converters
from graphnfn import cli
from graphnfn.symmetries import describe_symmetries
from graphnfn.io import load_graph, save_graph
from nets import assert_bitwise_equal, randomize_norms


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
