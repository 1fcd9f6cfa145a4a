"""ResNets through the torch.fx path: ResNet-18 converts and round-trips bit for
bit; permuting channels consistently across each residual stage (and freely
inside each block) keeps the function and gives an isomorphic graph."""
import pytest
import torch
from hypothesis import given, strategies as st

import converters
import graphnfn
from converters.reference_nets import ResNet, resnet18
from graphnfn import EdgeType, NodeType
from nets import assert_bitwise_equal, randomize_norms
from test_transformer_tools import assert_isomorphic_under, assert_symmetry, group_node_map, permuted

BN = ("weight", "bias", "running_mean", "running_var")


@st.composite
def resnets(draw):
    stages = draw(st.integers(1, 3))
    widths = tuple(draw(st.lists(st.integers(1, 4), min_size=stages, max_size=stages)))
    blocks = tuple(draw(st.lists(st.integers(1, 2), min_size=stages, max_size=stages)))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = ResNet(widths, blocks, num_classes=draw(st.integers(1, 3)), in_channels=draw(st.integers(1, 3)))
    randomize_norms(model, torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    return model.eval()


def stage_permutation(model: ResNet, gen: torch.Generator, same_in_stage: bool = True):
    """Moves and node-group permutations for one channel permutation per
    residual stage (shared by the stem, every block's conv2/bn2, downsample and
    sum in the stage) and one per block for its inner channels. With
    ``same_in_stage=False`` every block draws its own stream permutation: not a
    symmetry."""
    g = converters.to_graph(model)
    sums = iter(name for i, name in enumerate(g.spec.node_groups) if int(g.node_type[g.node_group == i][0]) == NodeType.RESIDUAL)
    rand = lambda n: torch.randperm(n, generator=gen)  # noqa: E731
    stream = rand(model.conv1.out_channels)
    moves = [("conv1.weight", 0, stream)] + [(f"bn1.{t}", 0, stream) for t in BN]
    perms = {"conv1": stream, "bn1": stream}
    for s in range(model.stages):
        layer = getattr(model, f"layer{s + 1}")
        # a block without downsample adds its input: the stream goes on unchanged
        new_stream = stream if layer[0].downsample is None else rand(layer[0].conv2.out_channels)
        for j, block in enumerate(layer):
            if not same_in_stage and j:
                new_stream = rand(block.conv2.out_channels)
            p, inner = f"layer{s + 1}.{j}", rand(block.conv1.out_channels)
            moves += [(f"{p}.conv1.weight", 0, inner), (f"{p}.conv1.weight", 1, stream),
                      (f"{p}.conv2.weight", 0, new_stream), (f"{p}.conv2.weight", 1, inner)]
            moves += [(f"{p}.bn1.{t}", 0, inner) for t in BN] + [(f"{p}.bn2.{t}", 0, new_stream) for t in BN]
            perms |= {f"{p}.conv1": inner, f"{p}.bn1": inner, f"{p}.conv2": new_stream, f"{p}.bn2": new_stream,
                      next(sums): new_stream}
            if block.downsample is not None:
                moves += [(f"{p}.downsample.0.weight", 0, new_stream), (f"{p}.downsample.0.weight", 1, stream)]
                moves += [(f"{p}.downsample.1.{t}", 0, new_stream) for t in BN]
                perms |= {f"{p}.downsample.0": new_stream, f"{p}.downsample.1": new_stream}
            stream = new_stream
    return moves + [("fc.weight", 1, stream)], perms


def images(model: ResNet, seed: int) -> tuple:
    return (torch.randn(2, model.conv1.in_channels, 16, 16, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64),)


@given(resnets(), st.integers(0, 2**16))
def test_stage_consistent_channel_permutation(model, seed):
    gen = torch.Generator().manual_seed(seed)
    moves, perms = stage_permutation(model, gen)
    assert_symmetry(model, moves, perms, images(model, seed))


def test_resnet18_stage_permutation():
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    randomize_norms(model, torch.Generator().manual_seed(1))
    moves, perms = stage_permutation(model.eval(), torch.Generator().manual_seed(2))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert_symmetry(model, moves, perms, (x,))


def test_stream_permutation_must_be_shared_inside_a_stage():
    torch.manual_seed(0)
    model = ResNet((4, 6), (2, 2), num_classes=3).double().eval()
    randomize_norms(model, torch.Generator().manual_seed(1))
    moves, perms = stage_permutation(model, torch.Generator().manual_seed(2), same_in_stage=False)
    other = permuted(model, moves)
    x = images(model, 3)[0]
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x))
    # the residual edges give it away: the graphs are not isomorphic under the claimed node map
    g1, g2 = converters.to_graph(model), converters.to_graph(other)
    with pytest.raises(AssertionError):
        assert_isomorphic_under(g1, g2, group_node_map(g1, g2, perms))


@given(st.lists(resnets(), min_size=1, max_size=3), st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_small_resnets_roundtrip_after_collate(models, dtype):
    models = [m.to(dtype) for m in models]
    batch = graphnfn.collate([converters.to_graph(m) for m in models])
    for m, g in zip(models, batch.to_data_list()):
        assert_bitwise_equal(converters.from_graph(g), m.state_dict())


def test_resnet18_converts_and_roundtrips():
    torch.manual_seed(0)
    model = resnet18()
    randomize_norms(model, torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    g = converters.to_graph(model)
    assert_bitwise_equal(converters.from_graph(g), model.state_dict())
    assert g.kernel_width == 49  # the 7x7 stem is the widest kernel
    assert int((g.node_type == NodeType.RESIDUAL).sum()) == 2 * (64 + 128 + 256 + 512)
    assert int((g.edge_type == EdgeType.RESIDUAL).sum()) == 2 * 2 * (64 + 128 + 256 + 512)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert int((g.edge_type == EdgeType.CONV).sum()) == sum(m.in_channels * m.out_channels for m in convs)
    with pytest.raises(converters.ConversionError, match="BatchNorm|residual"):
        converters.to_weight_space(model)
