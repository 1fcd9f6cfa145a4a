"""The encoding a user can check by hand (docs/encoding.md, "A worked example to check by hand")."""
import torch
from torch import nn

import converters
from graphnfn import EDGE_META, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, NodeType

COL = NODE_FEATURES.index


def test_linear_entries_become_edges_and_nodes():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    g = converters.to_graph(m)
    assert g.num_nodes == 9 and g.num_edges == 3 * 4 + 4 * 2
    assert g.node_type.tolist() == [NodeType.INPUT] * 3 + [NodeType.HIDDEN] * 4 + [NodeType.OUTPUT] * 2
    assert g.layer.tolist() == [0] * 3 + [1] * 4 + [2] * 2
    # inputs and outputs carry their index, hidden neurons do not
    assert g.x[:, COL("position")].tolist() == [0, 1, 2, -1, -1, -1, -1, 0, 1]
    # edge i -> j carries W[j, i]; bias b[j] sits on node j
    W, b = m[0].weight, m[0].bias
    for e in range(g.num_edges):
        src, dst = g.edge_index[:, e].tolist()
        if g.layer[dst] == 1:
            assert g.edge_attr[e, WEIGHT_COL] == W[dst - 3, src]
    assert torch.equal(g.x[3:7, COL("bias")], b.detach())
    assert torch.all(g.x[3:7, COL("act_relu")] == 1)
    assert torch.all(g.x[7:, COL("act_identity")] == 1)
    assert torch.all(g.edge_type == EdgeType.LINEAR)


def test_conv_edges_hold_flattened_padded_kernels():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, (3, 2), stride=2, padding=1, dilation=1), nn.ReLU(),
                      nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    g = converters.to_graph(m)
    meta = {name: g.edge_attr[:, i] for i, name in enumerate(EDGE_META)}
    first = g.edge_group == 0
    assert g.kernel_width == 6 and int(first.sum()) == 6
    assert torch.all(meta["kernel_h"][first] == 3) and torch.all(meta["kernel_w"][first] == 2)
    assert torch.all(meta["stride_h"][first] == 2) and torch.all(meta["padding_w"][first] == 1)
    src, dst = g.edge_index[:, first]
    for e, (i, j) in enumerate(zip(src.tolist(), dst.tolist())):
        assert torch.equal(g.edge_attr[first][e, WEIGHT_COL:], m[0].weight[j - 2, i].reshape(-1))
    second = g.edge_group == 1  # 1x1 kernels, zero-padded to the widest kernel
    assert torch.all(g.edge_attr[second, WEIGHT_COL + 1:] == 0)
    # global pooling: channels feed the Linear directly, no flatten nodes
    assert not bool((g.node_type == NodeType.FLATTEN).any())
    assert torch.all(g.x[g.layer == 2, COL("pool_avg")] == -1)


def test_batchnorm_is_a_layer_of_norm_nodes():
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([4.0, 5.0, 6.0]))
    g = converters.to_graph(nn.Sequential(nn.Linear(2, 3), bn, nn.Tanh(), nn.Linear(3, 1)))
    norm = g.node_type == NodeType.NORM
    assert int(norm.sum()) == 3
    assert g.edge_attr[g.edge_type == EdgeType.NORM, WEIGHT_COL].tolist() == [1.0, 2.0, 3.0]
    assert torch.allclose(g.x[norm, COL("bias")], torch.tensor([0.1, 0.2, 0.3]))
    assert g.x[norm, COL("running_mean")].tolist() == [4.0, 5.0, 6.0]
    assert torch.all(g.x[norm, COL("act_tanh")] == 1)


def test_state_dict_mlp_has_unknown_activations():
    sd = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).state_dict()
    g = converters.to_graph(sd)
    hidden = g.node_type == NodeType.HIDDEN
    assert torch.all(g.x[hidden, COL("act_unknown")] == 1)
    assert Activation.UNKNOWN.name.lower() in "unknown"


def test_summary_lists_layers():
    g = converters.to_graph(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
    text = g.summary()
    assert "6 nodes, 9 edges" in text and "output" in text and "hidden" in text


def test_readme_worked_example():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    g = converters.to_graph(model)
    assert g.edge_index.tolist() == [[0, 1, 0, 1, 0, 1, 2, 3, 4], [2, 2, 3, 3, 4, 4, 5, 5, 5]]
    assert torch.equal(g.edge_attr[:6, WEIGHT_COL], model[0].weight.detach().reshape(-1))
    assert torch.equal(g.edge_attr[6:, WEIGHT_COL], model[2].weight.detach().reshape(-1))
    assert g.x[2, COL("bias")] == model[0].bias[0] and g.x[5, COL("bias")] == model[2].bias[0]
    assert g.x[:, COL("position")].tolist() == [0, 1, -1, -1, -1, 0]
