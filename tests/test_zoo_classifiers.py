"""CNN and transformer zoos: the networks, their hyperparameters, tiny zoos end to end."""
import pytest
import torch
from torch import nn

import converters
from graphnfn.zoo import Zoo, graph_loader, make_classifier_zoo, make_cnn, make_vit, weight_space_loader
from graphnfn.zoo import cnn, vit
from graphnfn.zoo.makers import network_splits
from graphnfn.zoo.classifier_training import checkpoint_epochs
from test_zoo_common import one_thread  # noqa: F401 (autouse fixture)


def test_small_cnn_zoo_network():
    model = make_cnn(activation="tanh", dropout=0.3)
    assert isinstance(model, nn.Sequential)
    assert sum(p.numel() for p in model.parameters()) == 4970
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    g = converters.to_graph(model)
    assert all(torch.equal(converters.from_graph(g)[k], v) for k, v in model.state_dict().items())
    ws = converters.to_weight_space(model)
    assert [tuple(w.shape[2:]) for w in ws.weights] == [(16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16)]
    with pytest.raises(ValueError, match="activation 'gelu'"):
        make_cnn(activation="gelu")


@pytest.mark.parametrize("scheme", sorted(cnn.INITS))
def test_cnn_initialisations(scheme):
    gen = torch.Generator().manual_seed(0)
    model = make_cnn()
    cnn.initialise(model, scheme, 0.05, gen)
    w = model[3].weight.detach()
    assert float(model[3].bias.detach().abs().max()) == 0
    if scheme == "truncated_normal":
        assert float(w.abs().max()) <= 0.1
    if scheme == "orthogonal":
        flat = w.flatten(1)
        torch.testing.assert_close(flat @ flat.T, torch.eye(16), atol=1e-5, rtol=0)


def test_hyperparameters_are_drawn_from_the_seed():
    a = cnn.sample_hparams(torch.Generator().manual_seed(5))
    b = cnn.sample_hparams(torch.Generator().manual_seed(5))
    assert a == b and set(a) >= {"activation", "w_init", "learning_rate", "l2reg", "dropout", "train_fraction"}
    assert 5e-4 <= a["learning_rate"] <= 5e-2 and 0 <= a["dropout"] <= 0.7
    draws = [vit.sample_hparams(torch.Generator().manual_seed(s)) for s in range(40)]
    assert len({d["learning_rate"] for d in draws}) > 3


def test_vit_layout_for_the_transformer_converter():
    model = make_vit(8)
    names = dict(model.named_modules())
    for b in range(2):
        for proj in "qkvo":
            layer = names[f"blocks.{b}.attn.{proj}"]
            assert isinstance(layer, nn.Linear) and layer.weight.shape == (32, 32) and layer.bias is None
        assert isinstance(names[f"blocks.{b}.norm1"], nn.LayerNorm) and isinstance(names[f"blocks.{b}.mlp"], nn.Sequential)
    assert model.blocks[0].attn.heads == 2
    assert model.pos_embed.shape == (1, 17, 32) and model.cls_token.shape == (1, 1, 32)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert make_vit(28).patch == 4


def test_vit_patch_embedding_and_attention_match_a_direct_computation():
    torch.manual_seed(0)
    model = make_vit(4, patch=2).double()
    images = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    tokens = model.patch_embed(images).flatten(2).transpose(1, 2)
    second = images[:, 0, 0:2, 2:4].reshape(2, 4)  # second patch of the first row, row-major inside
    w = model.patch_embed.weight.reshape(32, 4)
    torch.testing.assert_close(tokens[:, 1], second @ w.T + model.patch_embed.bias)
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    heads = []
    for h in range(2):
        rows = slice(16 * h, 16 * (h + 1))
        q, k, v = (x @ getattr(attn, n).weight[rows].T for n in "qkv")
        heads.append(torch.softmax(q @ k.transpose(1, 2) / 4.0, -1) @ v)
    torch.testing.assert_close(attn(x), torch.cat(heads, -1) @ attn.o.weight.T)


def test_vit_converts_to_a_neuron_graph():
    """The transformer converter (issue 4) reads this ViT exactly."""
    model = make_vit(8)
    g = converters.to_graph(model)
    sd = converters.from_graph(g)
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_network_splits():
    names = network_splits(50, 0)
    assert names.count("train") == 35 and names.count("val") == 5 and names.count("test") == 10
    assert names == network_splits(50, 0) and names != network_splits(50, 1)


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_tiny_classifier_zoo(tmp_path, kind):
    out = make_classifier_zoo(kind, tmp_path / kind, networks=3, epochs=2, batch_size=256, shard_size=2,
                              device="cpu", progress=False)
    zoo = Zoo(out)
    epochs = checkpoint_epochs(2)
    assert epochs == [0, 1, 2] and len(zoo) == 3 * len(epochs)
    for r in zoo.records:
        assert r["id"] == r["network"] * len(epochs) + epochs.index(r["epoch"])
        assert set(r["metrics"]) == {"train_accuracy", "train_loss", "test_accuracy", "test_loss"}
        assert r["label"] == r["metrics"]["test_accuracy"] and r["final"] == (r["epoch"] == 2) and r["finite"]
    # each checkpoint's stored weights reproduce its recorded test accuracy
    from graphnfn.datasets import load_digits
    from graphnfn.zoo.classifier_training import score_classifier

    data = load_digits()
    test = data.train_test["test"]
    i = 4
    acc, _ = score_classifier(zoo.module(i), data.images[test] * 2 - 1, data.labels[test])
    assert acc == pytest.approx(zoo.records[i]["metrics"]["test_accuracy"])
    # checkpoints of one network differ, hyperparameters of networks differ
    assert not torch.equal(zoo.state_dict(0)[next(iter(zoo.state_dict(0)))], zoo.state_dict(2)[next(iter(zoo.state_dict(2)))])
    assert zoo.records[0]["hparams"] != zoo.records[3]["hparams"]
    # both views of the zoo (transformers: the attention weight space)
    batch = next(iter(graph_loader(zoo, batch_size=2)))
    spaces, y = next(iter(weight_space_loader(zoo, batch_size=2)))
    assert batch.num_graphs == 2 and y.shape == (2,) and spaces.batch_size == 2
