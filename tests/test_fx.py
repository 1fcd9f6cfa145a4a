"""The torch.fx path: modules that are not chains (residual sums, concatenations,
several inputs, reshapes) wire as DAGs, round-trip bit for bit, and the graph
computes the network (checked by running the graph itself)."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from torch import nn

import converters
import graphnfn
from converters import ConversionError, UnsupportedModuleError
from converters.reference_nets import GPT, ResNet
from graphnfn.modules import ViT
from graphnfn import NODE_FEATURES, WEIGHT_COL, EdgeType, NodeType
from nets import assert_bitwise_equal, mlps
from test_transformer_tools import run_graph

ACTS = {"none": lambda t: t, "relu": torch.relu, "tanh": torch.tanh}


class Dag(nn.Module):
    """A random DAG of Linear layers, LayerNorms, residual sums and concatenations.

    ``plan`` steps: ("linear", src, width, act), ("norm", src), ("add", a, b,
    act) or ("cat", a, b); value 0 is the input, each step appends one value, and a
    Linear head reads the last one. The first step is a Linear: an input gets
    its size from the first layer that reads it."""

    def __init__(self, n_in: int, plan: list[tuple], n_out: int, bias: bool):
        super().__init__()
        self.plan = plan
        widths = [n_in]
        self.layers = nn.ModuleList()
        for step in plan:
            if step[0] == "linear":
                self.layers.append(nn.Linear(widths[step[1]], step[2], bias=bias))
                widths.append(step[2])
            elif step[0] == "norm":
                self.layers.append(nn.LayerNorm(widths[step[1]]))
                with torch.no_grad():
                    self.layers[-1].weight.normal_()
                    self.layers[-1].bias.normal_()
                widths.append(widths[step[1]])
            else:
                widths.append(widths[step[1]] + (widths[step[2]] if step[0] == "cat" else 0))
        self.head = nn.Linear(widths[-1], n_out)

    def forward(self, x):
        values, layer = [x], 0
        for step in self.plan:
            if step[0] in ("linear", "norm"):
                out = self.layers[layer](values[step[1]])
                out = ACTS[step[3]](out) if step[0] == "linear" else out
                layer += 1
            elif step[0] == "add":
                out = ACTS[step[3]](values[step[1]] + values[step[2]])
            else:
                out = torch.cat([values[step[1]], values[step[2]]], dim=1)
            values.append(out)
        return self.head(values[-1])


@st.composite
def dags(draw):
    n_in = draw(st.integers(1, 4))
    widths, plan = [n_in], []
    for step in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["linear", "norm", "add", "cat"])) if step else "linear"
        a = draw(st.integers(0, len(widths) - 1))
        partners = [i for i, w in enumerate(widths) if w == widths[a]]
        act = draw(st.sampled_from(sorted(ACTS)))
        if kind == "add" and len(partners) > 1:
            b = draw(st.sampled_from(partners))
            plan.append(("add", a, b, act))
            widths.append(widths[a])
        elif kind == "norm" and widths[a] > 1:
            plan.append(("norm", a))
            widths.append(widths[a])
        elif kind == "cat":
            b = draw(st.integers(0, len(widths) - 1))
            plan.append(("cat", a, b))
            widths.append(widths[a] + widths[b])
        else:
            plan.append(("linear", a, draw(st.integers(1, 5)), act))
            widths.append(plan[-1][2])
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return Dag(n_in, plan, draw(st.integers(1, 3)), draw(st.booleans()))


@given(dags(), st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_random_dag_roundtrip(model, dtype):
    model = model.to(dtype)
    assert_bitwise_equal(converters.from_graph(converters.to_graph(model)), model.state_dict())


@given(dags(), st.integers(0, 2**16))
def test_random_dag_graph_computes_the_network(model, seed):
    model = model.double()
    g = converters.to_graph(model)
    n_in = int((g.node_type == NodeType.INPUT).sum())
    x = torch.randn(4, n_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(run_graph(g, x), model(x), rtol=1e-9, atol=1e-9)


@given(st.lists(st.one_of(dags(), mlps()), min_size=1, max_size=4))
def test_dags_roundtrip_after_collate(models):
    batch = graphnfn.collate([converters.to_graph(m) for m in models])
    for m, g, sd in zip(models, batch.to_data_list(), converters.from_graph(batch)):
        assert_bitwise_equal(converters.from_graph(g), m.state_dict())
        assert_bitwise_equal(sd, m.state_dict())


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(3, 5), nn.Linear(5, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.relu(x + self.fc2(torch.relu(self.fc1(x)))))


def test_residual_sum_is_a_layer_of_residual_nodes():
    torch.manual_seed(0)
    m = ResidualMLP().double()
    g = converters.to_graph(m)
    res = (g.node_type == NodeType.RESIDUAL).nonzero().squeeze(1)
    assert res.numel() == 3 and torch.all(g.x[res, NODE_FEATURES.index("act_relu")] == 1)
    into = (g.edge_type == EdgeType.RESIDUAL)
    assert int(into.sum()) == 6 and torch.all(g.edge_attr[into, WEIGHT_COL] == 1)
    sources = g.node_type[g.edge_index[0, into]]
    assert sorted(sources.tolist()) == [NodeType.INPUT] * 3 + [NodeType.HIDDEN] * 3
    # one layer below the sum: fc2 is at depth 2, so the sum is at 3 and the head at 4
    assert set(g.layer[res].tolist()) == {3} and g.layer.max() == 4
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(run_graph(g, x), m(x))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(2, 3), nn.Linear(2, 4), nn.Linear(7, 1)

    def forward(self, x):
        return self.head(torch.cat([torch.tanh(self.a(x)), self.b(x)], dim=-1))


def test_concatenation_joins_features_in_order():
    torch.manual_seed(0)
    m = Concat()
    g = converters.to_graph(m)
    assert g.num_nodes == 2 + 3 + 4 + 1  # a concatenation makes no nodes
    head = g.edge_group == g.spec.edge_groups.index("head.weight")
    src = g.edge_index[0, head]
    groups = [g.spec.node_groups[i] for i in g.node_group[src].tolist()]
    assert groups == ["a"] * 3 + ["b"] * 4
    assert torch.equal(g.edge_attr[head, WEIGHT_COL], m.head.weight.detach()[0])
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fx, self.fy = nn.Linear(3, 4), nn.Linear(2, 4)

    def forward(self, x, y):
        return self.fx(x) + self.fy(y)


class DenseConv(nn.Module):
    """Channel concatenation with the input (DenseNet style), then tokens."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.mix = nn.Conv2d(5, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.mix(torch.cat([x, F.relu(self.conv(x))], dim=1))
        return self.fc(x.flatten(2).transpose(1, 2)).mean(dim=1)


def test_several_inputs_and_channel_concatenation():
    torch.manual_seed(0)
    m = TwoInputs()
    g = converters.to_graph(m)
    inputs = g.node_type == NodeType.INPUT
    assert int(inputs.sum()) == 5 and {g.spec.node_groups[i] for i in g.node_group[inputs].tolist()} == {"input", "input:y"}
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())
    m = DenseConv()
    g = converters.to_graph(m)
    mix = g.edge_group == g.spec.edge_groups.index("mix.weight")
    assert int(mix.sum()) == 4 * 5
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())
    fc = (g.spec.node_groups.index("fc") == g.node_group)
    assert torch.all(g.x[fc, NODE_FEATURES.index("pool_avg")] == -1)  # the mean over tokens


@pytest.mark.parametrize("make", [lambda: ResNet((4, 8), (1, 2), 3), lambda: ViT(8, 4, 3, num_classes=3, dim=8, heads=2, depth=2),
                                  lambda: GPT(10, 6, 8, 2, 2), ResidualMLP, DenseConv])
def test_edges_flow_to_deeper_layers(make):
    """layer is the longest path from an input: every edge but the lateral
    q-k pairing goes from a shallower to a deeper node."""
    g = converters.to_graph(make())
    src, dst = g.edge_index
    flow = g.edge_type != EdgeType.QK_PAIR
    assert torch.all(g.layer[dst[flow]] > g.layer[src[flow]])
    pair = ~flow
    assert torch.all(g.layer[dst[pair]] == g.layer[src[pair]])


class Stale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.fc2 = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        return self.fc2(h) + torch.relu(h)  # relu after fc2 already read h


class Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.cumsum(self.fc(x), 1)


class SliceFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x)[:, 1:]


class InsideMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 8, batch_first=True)

    def forward(self, x):
        return self.enc(x, src_mask=torch.triu(torch.full((4, 4), float("-inf")), 1))


@pytest.mark.parametrize("model, match", [
    (Stale(), r"one value per neuron"),
    (Cumsum(), r"fx node 'cumsum'.*test_fx\.py.*unsupported operation"),
    (SliceFeatures(), r"fx node 'getitem'.*test_fx\.py"),
    (InsideMask(), r"fx node 'enc'.*mask"),
])
def test_ops_that_cannot_be_wired_name_the_fx_node(model, match):
    with pytest.raises(ConversionError, match=match):
        converters.to_graph(model)


class MaskedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 8, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x, padding):
        return self.head(self.enc(x, src_key_padding_mask=padding)[:, 0])


def test_runtime_masks_are_data_not_nodes():
    m = MaskedEncoder()
    g = converters.to_graph(m)
    assert int((g.node_type == NodeType.INPUT).sum()) == 4  # the mask input gets no nodes
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())
    with pytest.raises(UnsupportedModuleError):
        converters.to_graph(InsideMask())
