"""Which hidden neurons of a network can be relabelled (and flipped or scaled) together
without changing its function, read off its neuron graph.

Some edges tie a neuron to another one-to-one, so that relabelling one forces the same
relabelling of the other: a BatchNorm's diagonal edge (the channel and its norm node), a
Flatten's identity edges (a channel and its spatial positions), a residual sum's identity
edges (every operand channel and the sum: the stem, each block's last layer and the sums of
a ResNet stage share one permutation of the residual stream), a gated MLP's product edges
(hidden unit j of the gate and of the up projection feed product j), and a depthwise (grouped)
convolution's edges (channel c only reads channel c of the layer before). The connected
components of these ties are the units a permutation moves; a block of node groups tied
together is permuted as one: S_n for its n units.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .canonical import SCALE_ACTIVATIONS, SIGN_ACTIVATIONS, eligible
from .graph import ACT_COLS, Activation, EdgeType, NeuralGraph, NodeType

#: edges that are an identity or a diagonal: their two ends relabel together
TYING_EDGES = (EdgeType.NORM, EdgeType.FLATTEN, EdgeType.RESIDUAL, EdgeType.PRODUCT)


def _one_to_one(g: NeuralGraph) -> Tensor:
    """[E] bool: Linear/Conv edges of a tensor (edge group) that maps each source to one target and
    each target from one source (a depthwise convolution, a diagonal layer)."""
    out = torch.zeros(g.num_edges, dtype=torch.bool)
    dense = (g.edge_type == EdgeType.LINEAR) | (g.edge_type == EdgeType.CONV)
    for group in torch.unique(g.edge_group[dense & (g.edge_group >= 0)]).tolist():
        at = (g.edge_group == group) & dense
        src, dst = g.edge_index[:, at]
        if len(torch.unique(src)) == len(src) and len(torch.unique(dst)) == len(dst):
            out |= at
    return out


def units(g: NeuralGraph) -> Tensor:
    """[N] long: the unit of every node (nodes with the same unit move together under any
    relabelling that keeps the function), numbered 0..U-1."""
    parent = list(range(g.num_nodes))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tying = torch.isin(g.edge_type, torch.tensor([int(t) for t in TYING_EDGES])) | _one_to_one(g)
    for s, d in g.edge_index[:, tying].T.tolist():
        parent[find(s)] = find(d)
    roots = torch.tensor([find(i) for i in range(g.num_nodes)])
    return torch.unique(roots, return_inverse=True)[1]


def permutation_blocks(g: NeuralGraph) -> list[list[int]]:
    """The node groups (indices into ``g.spec.node_groups``) that one permutation acts on
    together, for every block containing hidden neurons; each block's units are permuted as one."""
    unit = units(g)
    blocks: dict[int, set[int]] = {}  # smallest unit-linked group -> groups
    link = list(range(len(g.spec.node_groups)))

    def find(i: int) -> int:
        while link[i] != i:
            i = link[i]
        return i

    for u in torch.unique(unit).tolist():
        groups = torch.unique(g.node_group[unit == u]).tolist()
        for other in groups[1:]:
            a, b = find(groups[0]), find(other)
            if a != b:
                link[max(a, b)] = min(a, b)
    for group in range(len(g.spec.node_groups)):
        blocks.setdefault(find(group), set()).add(group)
    hidden = set(torch.unique(g.node_group[g.node_type == NodeType.HIDDEN]).tolist())
    return [sorted(groups) for groups in blocks.values() if groups & hidden]


def describe_symmetries(g: NeuralGraph) -> list[str]:
    """One line per block of hidden neurons that permute together: its layers and the group
    that acts on it without changing the function (permutations of its units, times sign
    flips or positive scalings where every neuron's activation and edges allow)."""
    ok_sign = eligible(g.x, g.edge_index, g.edge_type, g.node_type, SIGN_ACTIVATIONS, no_max_pool=True)
    ok_scale = eligible(g.x, g.edge_index, g.edge_type, g.node_type, SCALE_ACTIVATIONS, no_max_pool=False)
    unit = units(g)
    lines = []
    for groups in permutation_blocks(g):
        at = torch.isin(g.node_group, torch.tensor(groups))
        hidden = at & (g.node_type == NodeType.HIDDEN)
        n = len(torch.unique(unit[at]))
        acts = sorted({Activation(int(a)).name.lower() for a in g.x[hidden][:, ACT_COLS].argmax(1).tolist()})
        factors = [f"S_{n}"]
        if bool(ok_sign[at].all()):
            factors.append(f"{{+1,-1}}^{n}")
        if bool(ok_scale[at].all()):
            factors.append(f"(R>0)^{n}")
        depths = sorted(set(g.layer[hidden].tolist()))
        names = [g.spec.node_groups[i] for i in groups if bool((hidden & (g.node_group == i)).any())]
        where = (f"layer {depths[0]} ({names[0]}, {n} {'/'.join(acts)} neurons)" if len(names) == 1 else
                 f"layers {', '.join(map(str, depths))} ({', '.join(names)}: {n} {'/'.join(acts)} channels each, "
                 "permuted together)")
        lines.append(f"{where}: {' x '.join(factors)}")
    return lines
