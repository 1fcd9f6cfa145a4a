"""Loaders (graph and weight-space views of one split), weight augmentations, the phase canonical
form, editing targets."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import converters
from graphnfn.zoo import (
    SirenRecipe, WeightAugment, Zoo, editing_target, edit_images, graph_loader, make_cnn, make_siren, make_siren_zoo,
    make_vit, weight_space_loader,
)
from graphnfn.zoo.augment import canonical_phase, chain_layers
from graphnfn.zoo.siren import SirenFit
from nets import pi_shifted
from test_zoo_common import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "siren"
    return Zoo(make_siren_zoo(out, limit=24, shard_size=8, recipe=SirenRecipe(fit=SirenFit(steps=10)), device="cpu",
                              progress=False))


def test_graph_and_weight_space_views_serve_the_same_examples(zoo):
    graphs = list(graph_loader(zoo, "train", batch_size=5))
    spaces = list(weight_space_loader(zoo, "train", batch_size=5))
    train = zoo.indices("train")
    assert sum(b.num_graphs for b in graphs) == len(train) == sum(ws.batch_size for ws, _ in spaces)
    labels = torch.tensor([zoo.records[i]["label"] for i in train])
    assert torch.equal(torch.cat([b.y for b in graphs]), labels)
    assert torch.equal(torch.cat([y for _, y in spaces]), labels)
    position = 0
    for batch, (ws, _) in zip(graphs, spaces):
        for b, sd in enumerate(converters.from_graph(batch)):
            i = train[position + b]
            assert int(batch.zoo_entry[b]) == i
            assert all(torch.equal(sd[k], v) for k, v in zoo.state_dict(i).items())
            assert torch.equal(ws.weights[1][b, 0], zoo.state_dict(i)["2.weight"])
            assert torch.equal(ws.biases[2][b, 0], zoo.state_dict(i)["4.bias"])
        position += batch.num_graphs


def test_targets_by_key_and_callable(zoo):
    ws, y = next(iter(weight_space_loader(zoo, "test", batch_size=3, target="metrics.psnr")))
    assert y.dtype == torch.float32 and y.shape == (3,)
    batch = next(iter(graph_loader(zoo, indices=[0, 1], target=lambda r: torch.full((2,), float(r["id"])))))
    assert batch.y.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="no entries in split 'nope'"):
        graph_loader(zoo, "nope")


def siren64():
    torch.manual_seed(0)
    return make_siren().double()


def cnn64(activation):
    torch.manual_seed(0)
    return make_cnn(activation=activation).double().eval()


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), which=st.sampled_from(["siren", "cnn-tanh", "cnn-relu"]))
def test_symmetry_augmentations_keep_the_function(seed, which):
    model = siren64() if which == "siren" else cnn64(which.split("-")[1])
    x = torch.rand(7, 2, dtype=torch.float64) * 2 - 1 if which == "siren" else torch.randn(3, 1, 8, 8, dtype=torch.float64)
    augment = WeightAugment(permute=True, sign_flip=True)
    state = augment(model, model.state_dict(), torch.Generator().manual_seed(seed))
    moved = sum(not torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert moved > 0
    other = siren64() if which == "siren" else cnn64(which.split("-")[1])
    other.load_state_dict(state)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=1e-9)


def test_sign_flips_only_where_the_activation_is_odd():
    assert [layer.odd for layer in chain_layers(make_siren())] == [True, True, False]
    assert [layer.odd for layer in chain_layers(make_cnn(activation="relu"))] == [False] * 4
    model = cnn64("relu")
    state = WeightAugment(sign_flip=True)(model, model.state_dict(), torch.Generator().manual_seed(0))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # a broken "symmetry": flipping signs through ReLU changes the function (the test above would catch it)
    flipped = cnn64("relu")
    with torch.no_grad():
        flipped[0].weight.neg_(), flipped[0].bias.neg_(), flipped[3].weight.neg_()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert not torch.allclose(flipped(x), model(x))


@settings(max_examples=20, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=1, max_size=3), w0=st.sampled_from([1.0, 7.0, 30.0]),
       seed=st.integers(0, 2**31 - 1))
def test_canonical_phase_is_one_representative_of_the_pi_shifts(widths, w0, seed):
    """Random SIRENs, float64, hidden biases spread over several periods (as an independently
    initialised SIREN's first layer is): the canonical form draws the same function with every
    hidden w0 * b in [-pi/2, pi/2] and the output layer untouched; a network moved by pi shifts
    (b + k pi / w0, outgoing weights times (-1)^k) has the same form; and the form commutes
    with sign flips, so sign-equivariant models stay exact on it."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_siren([2, *widths, 1], w0=w0).double()
    hidden = range(len(widths))
    with torch.no_grad():
        for layer in hidden:
            net[2 * layer].bias.uniform_(-20 / w0, 20 / w0, generator=gen)
    state = net.state_dict()
    canon = canonical_phase(net, state)
    drawn = copy.deepcopy(net)
    drawn.load_state_dict(canon)
    x = torch.rand(16, 2, dtype=torch.float64, generator=gen) * 2 - 1
    torch.testing.assert_close(drawn(x), net(x), rtol=0, atol=1e-9)
    assert all(float(canon[f"{2 * layer}.bias"].abs().max()) * w0 <= math.pi / 2 + 1e-9 for layer in hidden)
    assert sum(not torch.equal(canon[f"{2 * layer}.bias"], state[f"{2 * layer}.bias"]) for layer in hidden) > 0
    last = 2 * len(widths)
    assert torch.equal(canon[f"{last}.bias"], state[f"{last}.bias"])
    again = canonical_phase(net, pi_shifted(net, state, gen))
    for key, value in canon.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=1e-9)
    flip = WeightAugment(sign_flip=True)
    flipped_first = canonical_phase(net, flip(net, state, torch.Generator().manual_seed(seed)))
    flipped_after = flip(net, canon, torch.Generator().manual_seed(seed))
    for key, value in flipped_after.items():
        torch.testing.assert_close(flipped_first[key], value, rtol=0, atol=1e-12)


def test_canonical_phase_leaves_networks_without_sines_alone():
    assert [layer.w0 for layer in chain_layers(make_siren(w0=12.0))] == [12.0, 12.0, None]
    for activation in ("relu", "tanh"):
        model = cnn64(activation)
        state = canonical_phase(model, model.state_dict())
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_noise_and_dropout():
    model = siren64()
    sd = model.state_dict()
    noisy = WeightAugment(noise=0.1)(model, sd, torch.Generator().manual_seed(0))
    rel = (noisy["2.weight"] - sd["2.weight"]).std() / sd["2.weight"].std()
    assert 0.08 < float(rel) < 0.12
    assert torch.equal(noisy["4.bias"], sd["4.bias"])  # a single value has no spread to scale noise by
    dropped = WeightAugment(dropout=0.25)(model, sd, torch.Generator().manual_seed(0))
    zero = float((dropped["2.weight"] == 0).double().mean())
    assert 0.18 < zero < 0.32
    kept = dropped["2.weight"] != 0
    torch.testing.assert_close(dropped["2.weight"][kept], sd["2.weight"][kept] / 0.75)


def test_mirror_draws_the_image_mirrored_left_right():
    """``mirror=1``: about half the INRs come back with the first layer's column weights negated,
    and those draw their image flipped left-right, pixel for pixel, on the (row, column) grid;
    the rest are untouched. A network that does not read coordinates is refused."""
    from graphnfn.zoo import coordinate_grid

    model = siren64()
    grid = coordinate_grid(6).double()
    image = model(grid).view(6, 6)
    gen = torch.Generator().manual_seed(0)
    mirrored = 0
    for _ in range(40):
        state = WeightAugment(mirror=1)(model, model.state_dict(), gen)
        other = siren64()
        other.load_state_dict(state)
        drawn = other(grid).view(6, 6)
        if torch.equal(state["0.weight"], model.state_dict()["0.weight"]):
            torch.testing.assert_close(drawn, image, rtol=0, atol=0)
        else:
            mirrored += 1
            torch.testing.assert_close(drawn, image.flip(1), rtol=0, atol=1e-12)
            assert not torch.allclose(drawn, image)
    assert 10 <= mirrored <= 30
    with pytest.raises(TypeError, match="mirror=1 needs a first Linear layer that reads coordinate 1"):
        WeightAugment(mirror=1)(cnn64("relu"), cnn64("relu").state_dict())


@settings(max_examples=16, deadline=None)
@given(swap=st.booleans(), flip_rows=st.booleans(), flip_columns=st.booleans(), seed=st.integers(0, 2**16),
       resolution=st.integers(2, 7))
def test_every_image_view_moves_the_drawn_image_pixel_for_pixel(swap, flip_rows, flip_columns, seed, resolution):
    """For each of the 8 symmetries of the square, the INR with ``view.weights`` as its first layer
    draws ``view.image`` of the original's image, on even and odd grids (float64)."""
    from graphnfn.zoo import ImageView, coordinate_grid

    torch.manual_seed(seed)
    model = make_siren().double()
    grid = coordinate_grid(resolution, dtype=torch.float64)  # float32's linspace is not symmetric to 1e-12
    image = model(grid).view(1, resolution, resolution)
    view = ImageView((flip_rows, flip_columns), swap)
    moved = make_siren().double()
    moved.load_state_dict({**model.state_dict(), "0.weight": view.weights(model.state_dict()["0.weight"])})
    torch.testing.assert_close(moved(grid).view(1, resolution, resolution), view.image(image), rtol=0, atol=1e-12)


def test_dihedral_draws_each_of_the_eight_views():
    """``dihedral=True`` draws every view (about equally often) and moves only the first layer;
    it needs an INR of two coordinates and excludes ``mirror`` (which it contains)."""
    model = siren64()
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(0)
    seen = {}
    for _ in range(160):
        state, view = WeightAugment(dihedral=True).apply(model, sd, gen)
        seen[view] = seen.get(view, 0) + 1
        torch.testing.assert_close(state["0.weight"], view.weights(sd["0.weight"]), rtol=0, atol=0)
        assert all(torch.equal(state[k], v) for k, v in sd.items() if k != "0.weight")
    assert len(seen) == 8 and min(seen.values()) >= 8
    with pytest.raises(ValueError, match="give one of mirror and dihedral"):
        WeightAugment(mirror=1, dihedral=True)
    with pytest.raises(TypeError, match="dihedral needs a first Linear layer that reads two coordinates"):
        WeightAugment(dihedral=True)(cnn64("relu"), cnn64("relu").state_dict())


def test_augmented_loaders(zoo):
    plain = next(iter(weight_space_loader(zoo, "train", batch_size=4)))[0]
    torch.manual_seed(0)
    augmented = next(iter(weight_space_loader(zoo, "train", batch_size=4, augment=WeightAugment(permute=True))))[0]
    assert not torch.equal(plain.weights[1], augmented.weights[1])
    # a permutation moves whole rows: the multiset of first-layer rows is unchanged
    a = plain.weights[0][0, 0].sort(0).values
    b = augmented.weights[0][0, 0].sort(0).values
    assert torch.equal(a, b)


def test_attention_models_are_refused():
    with pytest.raises(TypeError, match="chains of Linear/Conv.*LayerNorm"):
        WeightAugment(permute=True)(make_vit(8), make_vit(8).state_dict())


def brute(image, k, before, reduce):
    h, w = image.shape
    out = torch.empty_like(image)
    for i in range(h):
        for j in range(w):
            window = image[max(0, i - before):i - before + k, max(0, j - before):j - before + k]
            out[i, j] = reduce(window)
    return out


def test_editing_targets():
    image = torch.rand(1, 1, 7, 9, generator=torch.Generator().manual_seed(0))
    dil = brute(image[0, 0], 3, 1, torch.max)
    ero = brute(image[0, 0], 2, 1, torch.min)
    assert torch.equal(edit_images(image, "dilate")[0, 0], dil)
    assert torch.equal(edit_images(image, "erode")[0, 0], ero)
    assert torch.equal(edit_images(image[0], "gradient")[0], brute(image[0, 0], 2, 1, torch.max) - ero)
    stretched = edit_images(image, "contrast")
    assert float(stretched.std()) > float(image.std()) and float(stretched.min()) >= 0 and float(stretched.max()) <= 1
    with pytest.raises(ValueError, match="unknown edit 'blur'"):
        edit_images(image, "blur")


def test_editing_targets_in_a_loader(zoo):
    from graphnfn.datasets import load_digits

    batch = next(iter(graph_loader(zoo, "val", batch_size=2, target=editing_target(zoo, "dilate"))))
    first = zoo.records[zoo.indices("val")[0]]
    expected = edit_images(load_digits().images[first["image"]], "dilate")
    assert batch.y.shape == (2, 1, 8, 8) and torch.equal(batch.y[0], expected)


@pytest.mark.parametrize("loader", [graph_loader, weight_space_loader])
def test_editing_targets_follow_the_drawn_view(zoo, loader):
    """With ``dihedral``, each training INR comes with the target of its moved image: the source
    digit moved, then edited (the 2x2 erosion does not commute with flips, so moving the edited
    digit would be wrong), in both views of the split."""
    from graphnfn import collate
    from graphnfn.datasets import load_digits
    from graphnfn.zoo import EditedImages, ImageView

    digits = load_digits().images
    dataset = loader(zoo, "train", target=editing_target(zoo, "erode"), augment=WeightAugment(dihedral=True)).dataset
    assert isinstance(dataset.target, EditedImages)
    views = [ImageView((r, c), swap) for swap in (False, True) for r in (False, True) for c in (False, True)]
    differs = 0
    for j, i in enumerate(dataset.indices[:12]):
        item = dataset[j]
        target, first = (item.y[0], converters.from_graph(collate([item]))[0]["0.weight"]) \
            if loader is graph_loader else (item[1], item[0].weights[0][0, 0])
        # the view drawn: the one whose first layer the item carries
        view, = [v for v in views if torch.equal(first, v.weights(zoo.state_dict(i)["0.weight"]))]
        source = digits[zoo.records[i]["image"]]
        assert torch.equal(target, edit_images(view.image(source), "erode"))
        differs += not torch.equal(target, view.image(edit_images(source, "erode")))
    assert differs > 0
