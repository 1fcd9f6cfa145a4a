"""graphnfn.symmetries: every group `graphnfn inspect` reports keeps the function (float64), and
the blocks are no finer than they must be (relabelling one member of a block alone does not)."""
import copy

import pytest
import torch
from torch import nn

import converters
from converters.reference_nets import ResNet
from graphnfn.symmetries import describe_symmetries, permutation_blocks, units
from nets import randomize_norms


def relabelled(g, perm, strict=True):
    """A copy of graph ``g`` whose node values moved by ``perm`` ([N] node -> node) while every node
    and edge keeps its place in the parameter tensors: ``from_graph`` then gives the relabelled network.
    ``strict=False``: an edge whose image is not an edge keeps its value (relabelling one side of a tie
    alone, e.g. a conv's channels without their BatchNorm)."""
    out = g.clone()
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    out.x = g.x[inverse]
    where = {(s, d, t, e): k for k, (s, d, t, e) in enumerate(zip(*g.edge_index.tolist(), g.edge_type.tolist(),
                                                                   g.edge_group.tolist()))}
    keys = list(zip(*g.edge_index.tolist(), g.edge_type.tolist(), g.edge_group.tolist()))
    target = [where[(int(perm[s]), int(perm[d]), t, e)] if strict else where.get((int(perm[s]), int(perm[d]), t, e), k)
              for k, (s, d, t, e) in enumerate(keys)]
    out.edge_attr = g.edge_attr.clone()
    out.edge_attr[torch.tensor(target)] = g.edge_attr
    return out


def block_permutation(g, groups, gen):
    """A random relabelling of the units of the node groups ``groups`` (the same one for all)."""
    unit = units(g)
    at = torch.isin(g.node_group, torch.tensor(groups))
    chosen = torch.unique(unit[at])
    shuffled = chosen[torch.randperm(len(chosen), generator=gen)]
    unit_map = dict(zip(chosen.tolist(), shuffled.tolist()))
    perm = torch.arange(g.num_nodes)
    for group in groups:  # within a group, node k of unit u goes to the node of unit map[u]
        nodes = (g.node_group == group).nonzero().flatten()
        by_unit = {int(unit[i]): [int(j) for j in nodes if unit[j] == unit[i]] for i in nodes}
        for u, members in by_unit.items():
            perm[torch.tensor(members)] = torch.tensor(by_unit[unit_map[u]])
    return perm


def same_function(model, g, perm, x, strict=True):
    other = copy.deepcopy(model)
    other.load_state_dict(converters.from_graph(relabelled(g, perm, strict)))
    return torch.allclose(other(x), model(x), rtol=1e-9, atol=1e-9)


def networks():
    torch.manual_seed(0)
    resnet = ResNet((3, 4), (2, 1), num_classes=2, in_channels=2)
    depthwise = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.Tanh(),
                              nn.Conv2d(4, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    return {"resnet": (resnet, (3, 2, 12, 12)), "depthwise": (depthwise, (3, 2, 9, 9)), "mlp": (mlp, (5, 3))}


@pytest.mark.parametrize("name", ["resnet", "depthwise", "mlp"])
def test_every_reported_block_keeps_the_function(name):
    model, shape = networks()[name]
    model = model.double()
    randomize_norms(model, torch.Generator().manual_seed(1))
    model.eval()
    g = converters.to_graph(model)
    x = torch.randn(shape, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    blocks = permutation_blocks(g)
    assert len(blocks) == len(describe_symmetries(g)) > 0
    for groups in blocks:
        for _ in range(3):
            assert same_function(model, g, block_permutation(g, groups, gen), x), [g.spec.node_groups[i] for i in groups]
    # the blocks are not too coarse to matter: relabelling one member of a shared block alone changes the function
    shared = [groups for groups in blocks if len(groups) > 1]
    if name != "mlp":
        assert shared
    for groups in shared:
        lone = [groups[0]]
        assert not all(same_function(model, g, block_permutation(g, lone, gen), x, strict=False) for _ in range(3))


def test_resnet_streams_are_one_block_per_stage():
    g = converters.to_graph(ResNet((3, 4), (2, 1), num_classes=2, in_channels=2))
    lines = describe_symmetries(g)
    stem = next(line for line in lines if "conv1" in line.split("(")[1].split(",")[0])
    assert "layer1.0.conv2" in stem and "layer1.1.conv2" in stem and stem.endswith("S_3")
    assert any(line.startswith("layer ") and "layer1.0.conv1" in line for line in lines)  # inner channels: own block
