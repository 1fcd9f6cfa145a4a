"""Invariant 2: permuting hidden neurons (a function-preserving change) gives an
isomorphic graph under the induced node permutation; permuting inputs does not."""
import networkx as nx
import numpy as np
import torch
from hypothesis import given, strategies as st
from torch import nn

import converters
from nets import cnns, induced_node_map, mlps, permute_hidden, randomize_norms


def edge_rows(g, node_map=None) -> np.ndarray:
    """Edges as sorted rows (src, dst, type, attributes...), endpoints mapped."""
    src, dst = g.edge_index if node_map is None else node_map[g.edge_index]
    rows = torch.cat([torch.stack([src, dst, g.edge_type]).T.to(torch.float64), g.edge_attr.to(torch.float64)], 1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


def assert_isomorphic_under(g1, g2, node_map):
    assert torch.equal(g2.x[node_map], g1.x)
    assert torch.equal(g2.node_type[node_map], g1.node_type)
    assert torch.equal(g2.layer[node_map], g1.layer)
    assert np.array_equal(edge_rows(g1, node_map), edge_rows(g2))


def check_permutation_symmetry(model, seed):
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    randomize_norms(model, gen)
    model.eval()
    permuted, perms = permute_hidden(model, gen)
    x = torch.randn((5,) + model.input_shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(permuted(x), model(x), rtol=1e-9, atol=1e-9)  # same function
    g1, g2 = converters.to_graph(model), converters.to_graph(permuted)
    assert_isomorphic_under(g1, g2, induced_node_map(g1, g2, perms))
    if any(not torch.equal(p, torch.arange(p.numel())) for p in perms.values()):
        assert not torch.equal(g1.edge_attr, g2.edge_attr) or not torch.equal(g1.x, g2.x)


@given(mlps(), st.integers(0, 2**16))
def test_mlp_hidden_permutation_gives_isomorphic_graph(model, seed):
    check_permutation_symmetry(model, seed)


@given(cnns(), st.integers(0, 2**16))
def test_cnn_channel_permutation_gives_isomorphic_graph(model, seed):
    check_permutation_symmetry(model, seed)


def _nx(g):
    G = nx.DiGraph()
    for i in range(g.num_nodes):
        G.add_node(i, f=tuple(g.x[i].tolist()) + (int(g.node_type[i]), int(g.layer[i])))
    for (s, d), a, t in zip(g.edge_index.T.tolist(), g.edge_attr.tolist(), g.edge_type.tolist()):
        G.add_edge(s, d, f=tuple(a) + (t,))
    return G


def _isomorphic(g1, g2) -> bool:
    same = lambda a, b: a["f"] == b["f"]  # noqa: E731
    return nx.is_isomorphic(_nx(g1), _nx(g2), node_match=same, edge_match=same)


def test_input_permutation_is_distinguishable_hidden_is_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    hidden, _ = permute_hidden(model, torch.Generator().manual_seed(1))
    inputs = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    inputs.load_state_dict(model.state_dict())
    with torch.no_grad():
        inputs[0].weight.copy_(model[0].weight[:, [1, 2, 0]])
    outputs = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    outputs.load_state_dict(model.state_dict())
    with torch.no_grad():
        outputs[2].weight.copy_(model[2].weight[[1, 0]])
        outputs[2].bias.copy_(model[2].bias[[1, 0]])
    g = converters.to_graph(model)
    assert _isomorphic(g, converters.to_graph(hidden))
    assert not _isomorphic(g, converters.to_graph(inputs))
    assert not _isomorphic(g, converters.to_graph(outputs))
