"""Helpers for the DAG / transformer / ResNet tests (no tests here): permuting
a model's parameters along chosen dims, the node map that permutation induces
on its neuron graph, and a reference evaluator that runs a network from its
graph alone."""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

import converters
from graphnfn import NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, NodeType
from test_symmetry import assert_isomorphic_under as assert_rows_isomorphic

Move = tuple[str, int, Tensor]  # (state_dict key, dim, permutation of that dim)


def block_perm(perm: Tensor, size: int) -> Tensor:
    """Index permutation of perm.numel() consecutive blocks of ``size`` (whole heads)."""
    return (perm[:, None] * size + torch.arange(size)).reshape(-1)


def within_blocks(perms: list[Tensor]) -> Tensor:
    """One permutation per consecutive block (dims inside each head)."""
    size = perms[0].numel()
    return torch.cat([p + i * size for i, p in enumerate(perms)])


def in_slice(perm: Tensor, offset: int, total: int) -> Tensor:
    """``perm`` acting on entries offset : offset + len(perm) of a dim of ``total``."""
    full = torch.arange(total)
    full[offset:offset + perm.numel()] = perm + offset
    return full


def permuted(model: nn.Module, moves: list[Move]) -> nn.Module:
    """A copy of model whose state_dict entry ``key`` is re-indexed along ``dim``
    (entry k becomes old entry perm[k]), for every move in turn."""
    out = copy.deepcopy(model)
    sd = out.state_dict()
    for key, dim, perm in moves:
        sd[key] = sd[key].index_select(dim, perm)
    out.load_state_dict(sd)
    return out


def group_node_map(g1, g2, perms: dict[str, Tensor]) -> Tensor:
    """For each node of g1 the node of g2 it becomes: inside node group G,
    g2's k-th node is g1's perms[G][k]-th (other groups stay in place)."""
    assert g1.spec.node_groups == g2.spec.node_groups
    node_map = torch.empty(g1.num_nodes, dtype=torch.long)
    for group, name in enumerate(g1.spec.node_groups):
        nodes1 = (g1.node_group == group).nonzero().squeeze(1)
        nodes2 = (g2.node_group == group).nonzero().squeeze(1)
        order = perms.get(name, torch.arange(nodes1.numel()))
        node_map[nodes1[order]] = nodes2
    return node_map


def assert_isomorphic_under(g1, g2, node_map: Tensor) -> None:
    """g2 is g1 with node i renamed node_map[i]: node features, types and
    layers, and the edge set with edge features and types, exactly. Graphs
    without parallel edges are compared by sorting one key per edge (fast on
    ResNet-18); others by the row-sorting check of test_symmetry."""
    n = g1.num_nodes
    key1 = node_map[g1.edge_index[0]] * n + node_map[g1.edge_index[1]]
    key2 = g2.edge_index[0] * n + g2.edge_index[1]
    if torch.unique(key1).numel() < key1.numel():
        return assert_rows_isomorphic(g1, g2, node_map)
    assert torch.equal(g2.x[node_map], g1.x)
    assert torch.equal(g2.node_type[node_map], g1.node_type)
    assert torch.equal(g2.layer[node_map], g1.layer)
    order1, order2 = key1.argsort(), key2.argsort()
    assert torch.equal(key1[order1], key2[order2])
    assert torch.equal(g1.edge_attr[order1], g2.edge_attr[order2])
    assert torch.equal(g1.edge_type[order1], g2.edge_type[order2])


def assert_symmetry(model: nn.Module, moves: list[Move], perms: dict[str, Tensor], inputs: tuple) -> None:
    """Permuting the parameters (moves) keeps the function (float64, 1e-9) and
    gives a graph isomorphic under the induced node permutation (perms, by
    node group); the parameters really moved."""
    model = model.double().eval()
    other = permuted(model, moves).eval()
    with torch.no_grad():
        torch.testing.assert_close(_first(other(*inputs)), _first(model(*inputs)), rtol=1e-9, atol=1e-9)
    g1, g2 = converters.to_graph(model), converters.to_graph(other)
    missing = set(perms) - set(g1.spec.node_groups)
    assert not missing, f"no node groups {missing} in {g1.spec.node_groups}"
    assert_isomorphic_under(g1, g2, group_node_map(g1, g2, perms))
    if any(not torch.equal(p, torch.arange(p.numel())) for p in perms.values()):
        assert not torch.equal(g1.edge_attr, g2.edge_attr) or not torch.equal(g1.x, g2.x)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


_COL = NODE_FEATURES.index
_ACTS = {Activation.IDENTITY: lambda t: t, Activation.RELU: torch.relu, Activation.TANH: torch.tanh,
         Activation.GELU: torch.nn.functional.gelu}


def run_graph(g, x: Tensor) -> Tensor:
    """Evaluate a graph of LINEAR, RESIDUAL and LayerNorm (NORM edges into
    LAYER_NORM nodes) edges on flat inputs x [B, n_in], depth by depth: node j
    gets act_j(bias_j + sum W h_src) (Linear), the sum of its residual
    operands, or the LayerNorm of its layer's sources. Returns [B, n_out] at the
    OUTPUT nodes in position order. A check that the wiring means the network."""
    h = torch.zeros(x.size(0), g.num_nodes, dtype=x.dtype)
    inputs = g.node_type == NodeType.INPUT
    h[:, inputs] = x[:, g.x[inputs, _COL("position")].long()]
    src, dst = g.edge_index
    act = g.x[:, _COL("act_identity"):_COL("act_identity") + len(Activation)].argmax(1)
    for depth in range(1, int(g.layer.max()) + 1):
        into = g.layer[dst] == depth
        pre = torch.zeros_like(h)
        for edge_type in (EdgeType.LINEAR, EdgeType.RESIDUAL, EdgeType.NORM):
            e = into & (g.edge_type == edge_type)
            if edge_type == EdgeType.NORM:
                for group in g.node_group[dst[e]].unique():  # LayerNorm over each norm layer's sources
                    eg = e & (g.node_group[dst] == group)
                    feats = h[:, src[eg]]
                    normed = (feats - feats.mean(1, keepdim=True)) / torch.sqrt(feats.var(1, unbiased=False, keepdim=True) + 1e-5)
                    pre.index_add_(1, dst[eg], normed * g.edge_attr[eg, WEIGHT_COL])
            else:
                pre.index_add_(1, dst[e], h[:, src[e]] * g.edge_attr[e, WEIGHT_COL])
        at = (g.layer == depth).nonzero().squeeze(1)
        pre = pre[:, at] + g.x[at, _COL("bias")]
        h[:, at] = torch.stack([_ACTS[Activation(int(a))](pre[:, i]) for i, a in enumerate(act[at].tolist())], 1)
    out = (g.node_type == NodeType.OUTPUT).nonzero().squeeze(1)
    return h[:, out[g.x[out, _COL("position")].argsort()]]
