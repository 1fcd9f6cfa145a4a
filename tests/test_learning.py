"""Learning, not motion: held-out checks on tasks that only a symmetry-respecting model
can solve and that the blind baselines fail.

Invariant task ("coupling"): tanh MLPs 2-16-1 with small random weights; one hidden
neuron gets a large bias and one output weight is large. Label 1 when both sit on the
same hidden neuron, 0 when on two different ones. Every tensor has the same marginal
distribution in both classes (stat sees nothing), the neuron is random (a flat MLP on
256 networks must learn 16 conjunctions), but a model that ties a neuron's bias to its
outgoing weight, as every permutation-equivariant layer does, reads the label off.

Equivariant task: the edit that adds, to every hidden bias, the product of that bias and
the neuron's outgoing weight: per neuron, nonlinear, coupled across layers.
"""
import pytest
import torch
from torch import nn

import converters
import graphnfn
from graphnfn import paramshare as ps
from graphnfn.registry import GRAPH_MODELS, build
from graphnfn.training import classification_task, fit

HIDDEN = 16


def coupling_zoo(n: int, seed: int) -> tuple[list[nn.Module], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    nets, labels = [], torch.arange(n) % 2
    for y in labels.tolist():
        net = nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            j, k = torch.randperm(HIDDEN, generator=gen)[:2].tolist()
            net[0].bias[j] = 2.0
            net[2].weight[0, j if y else k] = 2.0
        nets.append(net)
    return nets, labels


def batches(nets, labels, graph: bool, size: int = 32) -> list:
    out = []
    for s in range(0, len(nets), size):
        chunk, y = nets[s:s + size], labels[s:s + size]
        if graph:
            batch = graphnfn.collate([converters.to_graph(m) for m in chunk])
            batch.y = y
            out.append(batch)
        else:
            out.append((ps.concat([converters.to_weight_space(m) for m in chunk], 0), y))
    return out


@pytest.fixture(scope="module")
def coupling():
    return [coupling_zoo(n, seed) for n, seed in ((256, 0), (64, 1), (128, 2))]


def held_out_accuracy(name: str, splits) -> float:
    torch.manual_seed(0)
    graph = name in GRAPH_MODELS
    train, val, test = (batches(*split, graph) for split in splits)
    model = (build(name, train[0], 2, d_hidden=16, n_layers=2, heads=2, fourier=0) if graph
             else ps.build(name, train[0][0].spec, 2, hidden=16))
    result = fit(model, train, val, test, classification_task(), steps=200, eval_every=20, lr=3e-3, progress=False)
    return result.test["accuracy"]


@pytest.mark.parametrize("name", ["pna", "transformer", "sign-gnn", "nfn-np", "nfn-hnp", "nft"])
def test_symmetric_models_solve_the_coupling_task(name, coupling):
    assert held_out_accuracy(name, coupling) >= 0.9


@pytest.mark.parametrize("name", ["stat", "flat-mlp"])
def test_blind_baselines_fail_the_coupling_task(name, coupling):
    assert held_out_accuracy(name, coupling) <= 0.7


def coupled_edit(n: int, seed: int) -> tuple[ps.WeightSpace, ps.WeightSpace]:
    spec = ps.WeightSpaceSpec(((HIDDEN, 2), (1, HIDDEN)), ((HIDDEN,), (1,)))
    ws = ps.randn_space(spec, n, generator=torch.Generator().manual_seed(seed))
    delta = ws.map(torch.zeros_like)
    return ws, delta._replace(biases=(ws.weights[1][:, :, 0] * ws.biases[0], delta.biases[1]))


def _sq_error(a: ps.WeightSpace, b: ps.WeightSpace) -> torch.Tensor:
    return sum(((x - y) ** 2).sum() for x, y in zip((*a.weights, *a.biases), (*b.weights, *b.biases))) / a.batch_size


def held_out_edit_error(name: str) -> float:
    """Test squared error of the learned edit, relative to not editing."""
    (train, target), (test, test_target) = coupled_edit(256, 0), coupled_edit(128, 1)
    torch.manual_seed(0)
    model = ps.build(name, train.spec, 1, "equivariant", hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        pick = torch.randint(0, 256, (32,), generator=gen)
        loss = _sq_error(model(train.map(lambda t: t[pick])), target.map(lambda t: t[pick]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(_sq_error(model(test), test_target) / _sq_error(test.map(torch.zeros_like), test_target))


@pytest.mark.parametrize("name", ["nfn-hnp", "nft"])
def test_symmetric_models_learn_the_coupled_edit(name):
    assert held_out_edit_error(name) < 0.1


@pytest.mark.parametrize("name", ["stat", "flat-mlp"])
def test_blind_baselines_fail_the_coupled_edit(name):
    assert held_out_edit_error(name) > 0.5
