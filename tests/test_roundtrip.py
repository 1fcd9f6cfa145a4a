"""Invariant 1: from_graph(to_graph(m)) == m.state_dict(), bit for bit."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from safetensors.torch import save_file
from torch import nn

import converters
import graphnfn
from graphnfn import Activation, EdgeType, NodeType, NODE_FEATURES
from nets import assert_bitwise_equal, cnns, mlps, randomize_norms

DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])


def roundtrip(model: nn.Module) -> None:
    assert_bitwise_equal(converters.from_graph(converters.to_graph(model)), model.state_dict())


@given(mlps(), DTYPES, st.integers(0, 2**16))
def test_mlp_roundtrip(model, dtype, seed):
    randomize_norms(model, torch.Generator().manual_seed(seed))
    roundtrip(model.to(dtype))


@given(cnns(), DTYPES, st.integers(0, 2**16))
def test_cnn_roundtrip(model, dtype, seed):
    randomize_norms(model, torch.Generator().manual_seed(seed))
    roundtrip(model.to(dtype))


@given(st.lists(st.one_of(mlps(), cnns()), min_size=1, max_size=4), st.integers(0, 2**16))
def test_roundtrip_after_collate(models, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in models:
        randomize_norms(m, gen)
    batch = graphnfn.collate([converters.to_graph(m) for m in models])
    assert batch.num_graphs == len(models)
    for m, g, sd in zip(models, batch.to_data_list(), converters.from_graph(batch)):
        assert_bitwise_equal(converters.from_graph(g), m.state_dict())
        assert_bitwise_equal(sd, m.state_dict())


def test_pyg_data_loader_over_kernel_widths():
    """PyG's DataLoader has no hook to pad kernels: graphs of different widths are refused naming
    graphnfn.collate and graphnfn.pad_kernels; padded, they batch and fold back exactly."""
    from torch_geometric.loader import DataLoader

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))]
    models += [nn.Sequential(nn.Conv2d(1, 2, k), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
               for k in (3, 5)]
    graphs = [converters.to_graph(m) for m in models]
    for first, second, widths in ((0, 1, "1 and 9"), (2, 1, "25 and 9")):
        with pytest.raises(ValueError, match=rf"different kernel widths \({widths} kernel columns\).*graphnfn\.collate"
                                             r".*graphnfn\.pad_kernels"):
            next(iter(DataLoader([graphs[first], graphs[second]], batch_size=2)))
    assert next(iter(DataLoader([graphs[1], graphs[1]], batch_size=2))).num_graphs == 2  # same widths: as before
    batch = next(iter(DataLoader(graphnfn.pad_kernels(graphs), batch_size=3)))
    for m, g in zip(models, batch.to_data_list()):
        assert_bitwise_equal(converters.from_graph(g), m.state_dict())


def test_special_values_roundtrip():
    m = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[-0.0, 1e-45, 3.4e38], [float("nan"), float("inf"), -float("inf")]]))
    g = converters.to_graph(m, allow_nonfinite=True)
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())


@given(mlps(norms=False))
def test_state_dict_and_files_roundtrip(tmp_path_factory, model):
    sd = model.state_dict()
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.save(sd, tmp / "m.pt")
    torch.save({"epoch": 3, "state_dict": sd}, tmp / "nested.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "m.safetensors"))
    for source in (sd, tmp / "m.pt", str(tmp / "nested.pth")):
        assert_bitwise_equal(converters.from_graph(converters.to_graph(source)), sd)
    # safetensors does not keep key order; layers come back in natural order of their names
    back = converters.from_graph(converters.to_graph(tmp / "m.safetensors"))
    assert set(back) == set(sd)
    assert_bitwise_equal(back, {k: sd[k] for k in back})


class TracedCNN(nn.Module):
    """A third-party style CNN: not a Sequential, functional ops in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 3 * 3, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.tanh(self.conv2(x))
        x = x.view(x.size(0), -1)
        x = F.dropout(F.relu(self.fc1(x)), 0.1, self.training)
        return F.log_softmax(self.fc2(x), dim=1)


class Siren(nn.Module):
    def __init__(self, w0=30.0):
        super().__init__()
        self.w0 = w0
        self.layers = nn.ModuleList([nn.Linear(2, 32), nn.Linear(32, 32), nn.Linear(32, 1)])

    def forward(self, x):
        x = torch.sin(self.w0 * self.layers[0](x))
        x = torch.sin(self.w0 * self.layers[1](x))
        return self.layers[2](x)


class GapCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(2, 5, 3), nn.BatchNorm1d(5), nn.ReLU())
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=-1))


def test_fx_traced_modules_roundtrip_and_wiring():
    torch.manual_seed(0)
    for model in (TracedCNN(), Siren(), GapCNN()):
        roundtrip(model)
    g = converters.to_graph(TracedCNN())
    # fc1 reads 6 channels x 9 positions through flatten nodes
    assert int((g.node_type == NodeType.FLATTEN).sum()) == 54
    assert int((g.edge_type == EdgeType.FLATTEN).sum()) == 54
    act = g.x[:, NODE_FEATURES.index("act_identity"):].argmax(1)
    assert set(act[g.layer == 1].tolist()) == {Activation.RELU}
    assert set(act[g.layer == 2].tolist()) == {Activation.TANH}
    assert set(act[g.node_type == NodeType.OUTPUT].tolist()) == {Activation.LOG_SOFTMAX}
    pool = g.x[g.layer == 1, NODE_FEATURES.index("pool_max")]
    assert torch.all(pool == 4)
    siren = converters.to_graph(Siren(w0=30.0))
    hidden = siren.node_type == NodeType.HIDDEN
    assert torch.all(siren.x[hidden, NODE_FEATURES.index("act_sine")] == 1)
    assert torch.all(siren.x[hidden, NODE_FEATURES.index("act_param")] == 30.0)
    assert (siren.num_nodes, siren.num_edges) == (2 + 32 + 32 + 1, 2 * 32 + 32 * 32 + 32)
