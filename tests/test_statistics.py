"""Per-tensor statistics read off graph batches (graphnfn.statistics) and the graph models'
readout that adds them (``tensor_stats``)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import converters
import graphnfn
from graphnfn import registry
from graphnfn.graph import NODE_COL, WEIGHT_COL
from graphnfn.models import GraphNFN
from graphnfn.sign_model import SignGNN, acted_nodes, unsigned
from graphnfn.statistics import (KEPT, MAX_TENSORS, QUANTILES, STATS_PER_TENSOR, TensorStatistics, forget_statistics,
                                 segment_stats)
from nets import cnns, induced_node_map, mlps, permute_hidden
from test_sign_gnn import flip, nets_strategy, random_batch, random_signs


def stats_of(values: torch.Tensor) -> torch.Tensor:
    """What the stat baseline computes of one tensor, with torch's own reductions."""
    v = values.flatten().double()
    return torch.cat([v.mean()[None], v.var(correction=0)[None], torch.quantile(v, torch.tensor(QUANTILES).double())])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.integers(0, 2**16))
def test_segment_stats_are_torch_reductions_per_key(keys, seed):
    """Mean, variance and quantiles of each key's values; a key without values is all zeros."""
    key = torch.tensor(keys, dtype=torch.long)
    values = torch.randn(len(keys), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    values[: len(keys) // 3] = 0.5  # ties
    out = segment_stats(values, key, 6)
    assert out.shape == (6, STATS_PER_TENSOR)
    for k in range(6):
        at = key == k
        expected = stats_of(values[at]) if at.any() else torch.zeros(STATS_PER_TENSOR, dtype=torch.float64)
        torch.testing.assert_close(out[k], expected)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=30), st.integers(1, 4), st.integers(0, 2**16))
def test_segment_stats_work_channel_by_channel(keys, channels, seed):
    """values [M, C]: each channel's statistics are those of that column alone."""
    key = torch.tensor(keys, dtype=torch.long)
    values = torch.randn(len(keys), channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    values[: len(keys) // 4] = 0.25  # ties
    out = segment_stats(values, key, 5)
    assert out.shape == (5, channels, STATS_PER_TENSOR)
    for c in range(channels):
        torch.testing.assert_close(out[:, c], segment_stats(values[:, c].contiguous(), key, 5))


@st.composite
def plain_nets(draw):
    """Linear stacks, or Conv2d stacks with a Flatten and a Linear head (kernel values per edge)."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b, bias=draw(st.booleans())), nn.Tanh()]
        model = nn.Sequential(*layers[:-1])
        model.input_shape = (widths[0],)
        return model
    chans = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    layers = []
    for a, b in zip(chans, chans[1:]):
        layers += [nn.Conv2d(a, b, draw(st.integers(1, 3)), bias=draw(st.booleans())), nn.ReLU()]
    layers.append(nn.Flatten())
    size = nn.Sequential(*layers)(torch.zeros(1, chans[0], 5, 5)).size(1)
    model = nn.Sequential(*layers, nn.Linear(size, draw(st.integers(1, 3))))
    model.input_shape = (chans[0], 5, 5)
    return model


@settings(max_examples=15, deadline=None)
@given(st.lists(plain_nets(), min_size=1, max_size=3), st.sampled_from([0, 3]))
def test_graph_statistics_are_those_of_the_parameter_tensors(models, fourier):
    """Each graph's slot of edge group ``name`` holds the statistics of ``state_dict()[name]``,
    and the slot of node group ``m`` those of ``m.bias`` (zeros for a layer without one): the
    numbers the stat baseline reads off the weight space, kernels and flatten edges included;
    with ``fourier``, of each Fourier feature of the values (weights and biases with their own
    frequencies), channel by channel."""
    graphs = [converters.to_graph(m.double()) for m in models]
    batch = graphnfn.collate(graphs)
    stats = TensorStatistics(8, fourier).double()
    out = stats(batch, batch.x, batch.edge_attr, batch.batch, len(models)).view(len(models), 2, 8, 1 + 2 * fourier, -1)

    def expected(values, features):
        encoded = features(values.flatten().double().unsqueeze(1))  # [n, 1 + 2F]
        return torch.stack([stats_of(column) for column in encoded.T])
    for b, (model, g) in enumerate(zip(models, graphs)):
        state = model.state_dict()
        for slot, name in enumerate(g.spec.edge_groups):
            torch.testing.assert_close(out[b, 0, slot], expected(state[name], stats.weight_features))
        for slot, name in enumerate(g.spec.node_groups):
            bias = state.get(f"{name}.bias", torch.zeros(int((g.node_group == slot).sum())))
            torch.testing.assert_close(out[b, 1, slot], expected(bias, stats.bias_features))
        assert out[b, :, len(g.spec.node_groups):].abs().sum() == 0  # missing tensors are zeros


@settings(max_examples=8, deadline=None)
@given(mlps(max_width=5, norms=False), st.integers(1, 4))
def test_fourier_statistics_are_the_stat_baselines_features(model, fourier):
    """The graph side with ``fourier`` reads exactly what ``stat`` reads off the same network's
    Fourier-encoded weight space: tensor by tensor, the same numbers."""
    from graphnfn.paramshare.baselines import StatFeatures
    from graphnfn.paramshare.encoding import FourierEncoding

    model = model.double()
    space = converters.to_weight_space(model)
    encoding = FourierEncoding(space.spec, 1, fourier).double()
    expansion = encoding.expansion
    reference = StatFeatures(space.spec, expansion)(encoding(space)).view(-1, expansion, STATS_PER_TENSOR)
    g = converters.to_graph(model)
    n = len(space.weights)
    out = TensorStatistics(n + 1, fourier).double()(g, g.x, g.edge_attr, torch.zeros(g.num_nodes, dtype=torch.long), 1)
    out = out.view(2, n + 1, expansion, STATS_PER_TENSOR)
    torch.testing.assert_close(out[0, :n], reference[:n])  # the weight tensors, layer by layer
    torch.testing.assert_close(out[1, 1:], reference[n:])  # the biases (node group 0: the inputs)


def test_statistics_are_kept_while_the_batch_is_unchanged():
    """A fixed batch seen again gets the kept result, the same numbers as computing afresh; an
    in-place edit of its weights, a copy of the batch, another TensorStatistics and inputs that need
    a gradient get them computed anew."""
    models = [nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(3)]
    batch = graphnfn.collate([converters.to_graph(m) for m in models])
    stats = TensorStatistics(4, 2)

    def run(module, data, edge_attr=None):
        return module(data, data.x, data.edge_attr if edge_attr is None else edge_attr, data.batch, 3)

    first = run(stats, batch)
    assert run(stats, batch) is first  # kept
    assert KEPT not in batch.keys()  # not a data key: collation and .to() ignore it
    batch.edge_attr.data[:, WEIGHT_COL] *= 3  # behind torch's version counter: still kept, until forgotten
    assert run(stats, batch) is first
    forget_statistics(batch)
    tripled = run(stats, batch)
    assert tripled is not first and not torch.equal(tripled, first)
    batch.edge_attr.data[:, WEIGHT_COL] /= 3
    forget_statistics(batch)
    torch.testing.assert_close(run(stats, batch), first)
    batch.edge_attr[:, WEIGHT_COL] *= 2  # in place: the kept result is stale
    doubled = run(stats, batch)
    assert doubled is not first and not torch.equal(doubled, first)
    torch.testing.assert_close(doubled, stats._compute(batch, batch.x, batch.edge_attr, batch.batch, 3))
    copy = batch.clone()
    assert run(stats, copy) is not doubled
    graded = batch.edge_attr.clone().requires_grad_()
    out = run(stats, batch, graded)
    assert out.requires_grad and out is not doubled
    other = TensorStatistics(4, 2)
    assert run(other, batch) is not doubled  # another module (another model's inputs): computed, the same numbers
    torch.testing.assert_close(run(other, batch), doubled)


def test_later_tensors_share_the_last_slot():
    g = converters.to_graph(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
    out = TensorStatistics(2)(g, g.x, g.edge_attr, torch.zeros(g.num_nodes, dtype=torch.long), 1).view(2, 2, -1)
    later = torch.cat([g.weight[g.edge_group == k] for k in range(1, len(g.spec.edge_groups))])
    torch.testing.assert_close(out[0, 1], stats_of(later).float())
    with pytest.raises(ValueError, match="max_tensors"):
        TensorStatistics(0)


@settings(max_examples=8, deadline=None)
@given(st.one_of(mlps(max_width=5), cnns(size=8)), st.integers(0, 2**16))
@pytest.mark.parametrize("backbone", ["pna", "transformer", "sign-gnn"])
def test_readout_with_statistics_is_invariant(backbone, model, seed):
    """Relabelling hidden neurons leaves a model reading per-tensor statistics unchanged, and the
    statistics reach its head."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    permuted, perms = permute_hidden(model, gen)
    g1, g2 = converters.to_graph(model), converters.to_graph(permuted)
    induced_node_map(g1, g2, perms)  # the two graphs are one network relabelled
    torch.manual_seed(0)
    net = (SignGNN(3, d_hidden=8, n_layers=2, fourier=4, tensor_stats=4) if backbone == "sign-gnn" else
           GraphNFN(3, backbone=backbone, d_hidden=8, n_layers=2, heads=2, fourier=4, tensor_stats=4)).double().eval()
    assert net.head[0].in_features == 4 * 8 + 2 * 4 * STATS_PER_TENSOR  # pooled states, then the statistics
    torch.testing.assert_close(net(g1), net(g2), rtol=1e-9, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(nets=nets_strategy, seed=st.integers(0, 2**16))
def test_sign_gnn_statistics_are_sign_invariant(nets, seed):
    """SignGNN reads the statistics of |w| where the sign group acts (:func:`unsigned`), so sign
    flips of odd neurons change nothing; elsewhere it reads the values as they are."""
    g = random_batch(nets, seed)
    gf = flip(g, random_signs(g, seed))
    torch.manual_seed(seed)
    net = SignGNN(2, d_hidden=8, n_layers=2, fourier=4, tensor_stats=8, stats_fourier=2).double()
    torch.testing.assert_close(net(gf), net(g), rtol=1e-9, atol=1e-10)
    acted = acted_nodes(g)
    x, edge_attr = unsigned(g.x, g.edge_attr, g.edge_index, acted)
    untouched = ~acted
    torch.testing.assert_close(x[untouched, NODE_COL["bias"]], g.x[untouched, NODE_COL["bias"]].double())
    free = ~(acted[g.edge_index[0]] | acted[g.edge_index[1]])
    torch.testing.assert_close(edge_attr[free], g.edge_attr[free].double())
    assert (edge_attr[:, WEIGHT_COL:] >= 0)[~free].all()


def test_registry_and_readouts():
    """``tensor_stats=True`` builds MAX_TENSORS slots for both graph model kinds; the statistics
    feed the invariant readout only."""
    g = graphnfn.collate([converters.to_graph(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))])
    for name in ("pna", "sign-gnn"):
        model = registry.build(name, g, d_out=2, tensor_stats=True)
        assert model.pooling.stats.max_tensors == MAX_TENSORS and model(g).shape == (1, 2)
        assert registry.build(name, g, d_out=2).pooling.stats is None
        encoded = registry.build(name, g, d_out=2, fourier=4, tensor_stats="fourier")
        assert encoded.pooling.stats.width == 9 * model.pooling.stats.width and encoded(g).shape == (1, 2)
        with pytest.raises(ValueError, match="tensor_stats feeds the invariant readout only"):
            registry.build(name, g, d_out=1, readout="equivariant", tensor_stats=True)
        with pytest.raises(ValueError, match="tensor_stats must be False, True or 'fourier'"):
            registry.build(name, g, d_out=2, tensor_stats="quantiles")
