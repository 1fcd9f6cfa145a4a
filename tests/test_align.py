"""graphnfn.paramshare.align and the align-linear baseline: exact relabelling, recovery of a
permutation, and the two zoos it must tell apart (a permutation puzzle, unrelated labels)."""
import copy

import pytest
import torch
from torch import nn

import converters
from graphnfn.paramshare import AlignLinear, AttentionWeightSpace, WeightSpace, align, flatten
from graphnfn.training import accuracy, regression_metrics
from graphnfn.zoo.loaders import collate_weight_spaces
from nets import leaves, permute_hidden
from test_transformer_weight_space import heads_output

torch.set_num_threads(1)
PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def stack(spaces):
    """Batch-1 containers -> one batched container."""
    return collate_weight_spaces([(s, torch.tensor(0)) for s in spaces])[0]


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()


def cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).double()


def transformer(seed: int) -> nn.TransformerEncoder:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(6, 3, 8, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double()


def holding(model: nn.Module, space: WeightSpace, b: int) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv layers hold network ``b`` of ``space``."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for m, w, bias in zip([m for m in leaves(out) if isinstance(m, PARAM_LAYERS)], space.weights, space.biases):
            m.weight.copy_(w[b, 0])
            m.bias.copy_(bias[b, 0])
    return out


def inner(space, reference) -> torch.Tensor:
    """[B]: <flatten(network), flatten(reference)>, what align maximises."""
    return flatten(space) @ flatten(reference)[0]


@pytest.mark.parametrize("rounds", [0, 3])
@pytest.mark.parametrize("make, x", [(mlp, torch.randn(7, 3, dtype=torch.float64)),
                                     (cnn, torch.randn(7, 2, 6, 6, dtype=torch.float64))])
def test_alignment_preserves_every_function(make, x, rounds):
    nets = [make(seed) for seed in range(5)]
    space, reference = stack([converters.to_weight_space(n) for n in nets[1:]]), converters.to_weight_space(nets[0])
    aligned = align(space, reference, rounds=rounds)
    assert aligned.activations == space.activations  # fields other than the tensors survive
    assert not torch.equal(flatten(aligned), flatten(space))  # something moved
    assert (inner(aligned, reference) >= inner(space, reference)).all()
    if rounds:  # weight matching starts from the forward pass, never lowers the objective and here raises it
        gain = inner(aligned, reference) - inner(align(space, reference, rounds=0), reference)
        assert (gain >= -1e-12).all() and (gain > 1e-6).any()
    for b, net in enumerate(nets[1:]):
        torch.testing.assert_close(holding(net, aligned, b)(x), net(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [mlp, cnn])
def test_a_relabelled_copy_aligns_back_to_the_reference_exactly(make):
    ref = make(0)
    gen = torch.Generator().manual_seed(1)
    copies = [permute_hidden(ref, gen)[0] for _ in range(6)]
    space, reference = stack([converters.to_weight_space(c) for c in copies]), converters.to_weight_space(ref)
    assert not torch.equal(flatten(space), flatten(reference).expand(6, -1))
    assert torch.equal(flatten(align(space, reference)), flatten(reference).expand(6, -1))


def relabel_heads_and_mlp(ws: AttentionWeightSpace, gen: torch.Generator) -> AttentionWeightSpace:
    """Per block, a random order of the heads (as blocks) and of the MLP's hidden neurons."""
    fields = {f: list(getattr(ws, f)) for f in ws._fields}
    for i in range(ws.num_blocks):
        heads = torch.randperm(ws.query[i].size(2), generator=gen)
        hidden = torch.randperm(ws.mlp_in[i].size(3), generator=gen)
        for f in ("query", "key", "value", "out"):
            fields[f][i] = fields[f][i][:, :, heads]
        fields["mlp_in"][i] = fields["mlp_in"][i][..., hidden]
        for f in ("mlp_in_bias", "mlp_out"):
            fields[f][i] = fields[f][i][:, :, hidden]
    return AttentionWeightSpace(*(tuple(v) for v in fields.values()))


def test_attention_heads_and_mlp_neurons_align_exactly():
    nets = [transformer(seed) for seed in range(4)]
    reference = converters.to_attention_weight_space(nets[0])
    gen = torch.Generator().manual_seed(0)
    copies = stack([relabel_heads_and_mlp(reference, gen) for _ in range(5)])
    assert torch.equal(flatten(align(copies, reference)), flatten(reference).expand(5, -1))

    space = stack([converters.to_attention_weight_space(n) for n in nets[1:]])
    aligned = align(space, reference)
    assert not torch.equal(flatten(aligned), flatten(space))
    x = torch.randn(5, 6, dtype=torch.float64)
    for b in range(space.batch_size):
        before, after = (s.map(lambda t: t[b:b + 1]) for s in (space, aligned))
        for i in range(space.num_blocks):
            torch.testing.assert_close(heads_output(after, i, x), heads_output(before, i, x), rtol=0, atol=1e-12)
            mlp_of = [torch.relu(x @ s.mlp_in[i][0, 0] + s.mlp_in_bias[i][0, 0]) @ s.mlp_out[i][0, 0]
                      for s in (after, before)]
            torch.testing.assert_close(*mlp_of, rtol=0, atol=1e-12)


def test_wrong_inputs_are_refused():
    space = converters.to_weight_space(mlp(0))
    with pytest.raises(TypeError, match="WeightSpace"):
        align(tuple(space.weights), space)
    with pytest.raises(ValueError, match="batch 1"):
        align(space, stack([space, space]))
    with pytest.raises(ValueError, match="shapes"):
        align(space, converters.to_weight_space(cnn(0)))
    with pytest.raises(ValueError, match="kind"):
        AlignLinear(kind="ranking")


WIDTHS = (3, 12, 12, 2)


def random_mlp(gen: torch.Generator) -> list[torch.Tensor]:
    """[W_0, b_0, W_1, b_1, W_2, b_2] of a WIDTHS MLP, entries N(0, 1)."""
    return [torch.randn(shape, generator=gen) for o, i in zip(WIDTHS[1:], WIDTHS[:-1]) for shape in ((o, i), (o,))]


def puzzle_bases(classes: int, gen: torch.Generator) -> list[list[torch.Tensor]]:
    """One random MLP per class whose linear permutation invariants (sums over permuted
    axes, the output bias) are zero for every class: only the correspondence of neurons
    tells the classes apart."""
    bases = []
    for _ in range(classes):
        w0, b0, w1, b1, w2, b2 = random_mlp(gen)
        bases.append([w0 - w0.mean(0), b0 - b0.mean(), w1 - w1.mean(), b1 - b1.mean(), w2 - w2.mean(1, keepdim=True),
                      torch.zeros_like(b2)])
    return bases


def relabelled(base: list[torch.Tensor], gen: torch.Generator, noise: float) -> WeightSpace:
    """A copy of ``base`` with both hidden layers in a random order, plus Gaussian noise, as a batch-1 space."""
    p1, p2 = (torch.randperm(n, generator=gen) for n in WIDTHS[1:3])
    w0, b0, w1, b1, w2, b2 = base
    tensors = [w0[p1], b0[p1], w1[p2][:, p1], b1[p2], w2[:, p2], b2]
    tensors = [t + noise * torch.randn(t.shape, generator=gen) for t in tensors]
    return WeightSpace(tuple(t[None, None] for t in tensors[0::2]), tuple(t[None, None] for t in tensors[1::2]))


def batches(spaces: list, targets: torch.Tensor, size: int = 32) -> list:
    """(space, targets) batches as weight_space_loader yields them."""
    return [(stack(spaces[i:i + size]), targets[i:i + size]) for i in range(0, len(spaces), size)]


def splits(networks, labels: torch.Tensor, gen: torch.Generator, per_split=(160, 40, 80)) -> list[list]:
    """Train, val and test batches of a random split."""
    order = torch.randperm(len(labels), generator=gen).tolist()
    out, start = [], 0
    for n in per_split:
        chosen = order[start:start + n]
        out.append(batches([networks[j] for j in chosen], labels[chosen]))
        start += n
    return out


def score(model: AlignLinear, test: list) -> float:
    pred, y = torch.cat([model.predict(s) for s, _ in test]), torch.cat([y for _, y in test])
    if model.kind == "classification":
        assert pred.shape == (len(y), 4)
        return accuracy(pred, y)["accuracy"]
    assert pred.shape == (len(y), 1)
    return regression_metrics(pred, y)["tau"]


FEATURES = sum(i * o + o for i, o in zip(WIDTHS[:-1], WIDTHS[1:]))


def test_a_permutation_puzzle_needs_the_alignment():
    gen = torch.Generator().manual_seed(0)
    bases = puzzle_bases(4, gen)
    classes = torch.arange(280) % 4
    networks = [relabelled(bases[c], gen, noise=0.05) for c in classes.tolist()]
    train, val, test = splits(networks, classes, gen)
    aligned = AlignLinear().fit(train, val)
    assert score(aligned, test) >= 0.9
    assert abs(score(AlignLinear(align=False).fit(train, val), test) - 0.25) < 0.15
    assert aligned.strength in aligned.grid and set(aligned.val_scores) == set(aligned.grid)
    assert aligned.num_parameters == 4 * FEATURES + 4


def test_regression_on_a_permutation_puzzle():
    """Targets t in [0, 1]; each network a relabelled (1 - t) A + t B of two bases."""
    gen = torch.Generator().manual_seed(0)
    a, b = puzzle_bases(2, gen)
    targets = torch.rand(280, generator=gen, dtype=torch.float64)
    networks = [relabelled([(1 - t) * x + t * y for x, y in zip(a, b)], gen, noise=0.05) for t in targets.tolist()]
    train, val, test = splits(networks, targets, gen)
    aligned = AlignLinear("regression").fit(train, val)
    assert score(aligned, test) >= 0.9
    assert abs(score(AlignLinear("regression", align=False).fit(train, val), test)) < 0.3
    assert aligned.num_parameters == FEATURES + 1


def test_unrelated_labels_stay_near_chance():
    gen = torch.Generator().manual_seed(0)
    networks = [relabelled(random_mlp(gen), gen, noise=0.0) for _ in range(280)]
    labels = torch.randint(0, 4, (280,), generator=gen)
    train, val, test = splits(networks, labels, gen)
    model = AlignLinear(grid=(0.01, 0.1, 1.0, 10.0, 100.0)).fit(train, val)
    assert max(model.val_scores.values()) < 0.5  # scored on held-out networks, not the ones it fitted
    assert model.val_scores[model.strength] == max(model.val_scores.values())
    assert abs(score(model, test) - 0.25) < 0.15


def test_class_columns_are_class_ids():
    """Labels 0 and 2 only: three columns, the class never seen in training at -inf."""
    gen = torch.Generator().manual_seed(0)
    bases = puzzle_bases(2, gen)
    labels = 2 * (torch.arange(100) % 2)
    train, val, test = splits([relabelled(bases[c // 2], gen, 0.05) for c in labels.tolist()], labels, gen,
                              per_split=(60, 20, 20))
    pred = AlignLinear().fit(train, val).predict(test[0][0])
    assert pred.shape == (20, 3) and torch.isinf(pred[:, 1]).all()
    assert accuracy(pred, test[0][1])["accuracy"] == 1.0
