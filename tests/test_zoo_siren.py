"""SIREN zoo maker: the network, its init, batched fitting with per-INR early stopping."""
import math

import pytest
import torch

import converters
from graphnfn.zoo.makers import SIREN_RECIPES, siren_recipe
from graphnfn.zoo.siren import (
    SirenFit, coordinate_grid, fit_sirens, fit_targets, init_sirens, make_siren, psnr_from_mse, render, siren_forward,
    siren_keys,
)
from test_zoo_common import one_thread  # noqa: F401 (autouse fixture)


def test_literature_siren_shape_and_conversion():
    model = make_siren()
    assert sum(p.numel() for p in model.parameters()) == 1185
    assert list(model.state_dict()) == siren_keys()
    g = converters.to_graph(model)
    sd = converters.from_graph(g)
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    ws = converters.to_weight_space(model)
    assert [tuple(w.shape) for w in ws.weights] == [(1, 1, 32, 2), (1, 1, 32, 32), (1, 1, 1, 32)]


def test_batched_forward_matches_the_module():
    params = [p.double() for p in init_sirens([1, 2, 3])]
    coords = coordinate_grid(5).double()
    out = siren_forward(params, coords, 30.0)
    for b in range(3):
        model = make_siren().double()
        model.load_state_dict(dict(zip(siren_keys(), (p[b] for p in params))))
        torch.testing.assert_close(out[b], model(coords), rtol=0, atol=1e-12)


def test_init_depends_on_seed_only():
    a = init_sirens([7, 8, 9])
    b = init_sirens([9, 7])
    for x, y in zip(a, b):
        assert torch.equal(x[0], y[1]) and torch.equal(x[2], y[0])
    assert not torch.equal(a[0][0], a[0][1])
    w0 = a[0]  # first layer U(-1/2, 1/2); hidden U(+-sqrt(6/32)/30)
    assert float(w0.abs().max()) <= 0.5 and float(a[2].abs().max()) <= math.sqrt(6 / 32) / 30


def test_coordinate_grid_is_row_major():
    grid = coordinate_grid(3)
    assert grid.shape == (9, 2)
    assert grid[1].tolist() == [-1.0, 0.0] and grid[3].tolist() == [0.0, -1.0]


def targets(n, res=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return fit_targets(torch.rand(n, 1, res, res, generator=gen), None).double()


def test_batched_fit_equals_fitting_each_alone():
    """One Adam per INR: putting INRs in one batch changes nothing about each."""
    init = [p.double() for p in init_sirens(range(4))]
    tg = targets(4)
    fit = SirenFit(steps=25, lr=1e-3)
    together = fit_sirens(init, tg, fit)
    for b in range(4):
        alone = fit_sirens([p[b:b + 1] for p in init], tg[b:b + 1], fit)
        for x, y in zip(together.params, alone.params):
            torch.testing.assert_close(x[b:b + 1], y, rtol=0, atol=1e-11)
        torch.testing.assert_close(together.psnr[b:b + 1], alone.psnr, rtol=0, atol=1e-8)
    assert together.steps.tolist() == [25] * 4


def test_early_stop_drops_finished_inrs_without_disturbing_the_rest():
    init = [p.double() for p in init_sirens(range(6))]
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((3, 1, 6, 6), 0.5) + 0.01 * torch.rand(3, 1, 6, 6, generator=gen)  # easy
    noise = torch.rand(3, 1, 6, 6, generator=gen)  # hard
    tg = fit_targets(torch.cat([flat, noise]), None).double()
    full = fit_sirens(init, tg, SirenFit(steps=80, lr=1e-3))
    target = float(full.psnr[3:].max()) + 1.0  # the noise INRs never reach it, the flat ones do
    assert float(full.psnr[:3].min()) > target + 5
    early = fit_sirens(init, tg, SirenFit(steps=80, lr=1e-3, target_psnr=target, check_every=5))
    stopped = early.steps < 80
    assert stopped.tolist() == [True] * 3 + [False] * 3
    assert bool((early.psnr[stopped] >= target).all())
    assert all(int(s) % 5 == 0 for s in early.steps[stopped])
    for b in range(6):  # every INR holds exactly what fitting it alone for its step count gives
        alone = fit_sirens([p[b:b + 1] for p in init], tg[b:b + 1], SirenFit(steps=int(early.steps[b]), lr=1e-3))
        for x, y in zip(early.params, alone.params):
            torch.testing.assert_close(x[b:b + 1], y, rtol=0, atol=1e-11)
    # the recorded PSNR is that of the returned weights
    drawn = render(early.params, 6)
    mse = ((drawn.flatten(1) * 2 - 1) - tg).pow(2).mean(1)
    torch.testing.assert_close(psnr_from_mse(mse), early.psnr, rtol=0, atol=1e-6)


def test_fitting_reaches_a_good_psnr():
    init = init_sirens(range(8))
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = fit_sirens(init, fit_targets(images, 8), SirenFit(steps=150, lr=1e-3))
    assert float(result.psnr.min()) > 30


def test_fit_targets_checks_channels():
    with pytest.raises(ValueError, match="grey images"):
        fit_targets(torch.zeros(2, 3, 4, 4), None)


def test_shared_permuted_init_is_the_shared_init_reordered():
    from graphnfn.zoo.siren import coordinate_grid, init_sirens, permute_hidden, siren_forward

    shared = init_sirens([7, 7, 7], w0=30.0)
    shuffled = permute_hidden(shared, [1, 2, 3])
    grid = coordinate_grid(5)
    torch.testing.assert_close(siren_forward(shuffled, grid, 30.0), siren_forward(shared, grid, 30.0))
    assert not torch.equal(shuffled[0][0], shuffled[0][1])  # each INR its own neuron order
    assert torch.equal(shuffled[0][0].sort(0).values, shared[0][0].sort(0).values)


def test_recipe_options_replace_the_data_sets_settings():
    recipe = siren_recipe("digits", init="shared", steps=7, target_psnr=None)
    assert (recipe.init, recipe.fit.steps, recipe.fit.target_psnr) == ("shared", 7, None)
    assert recipe.fit.lr == SIREN_RECIPES["digits"].fit.lr and recipe.resolution == 8
    with pytest.raises(ValueError, match="unknown SIREN zoo settings"):
        siren_recipe("digits", widths=3)
    with pytest.raises(ValueError, match="init 'random'"):
        siren_recipe("digits", init="random")
    with pytest.raises(ValueError, match="no SIREN zoo recipe"):
        siren_recipe("cifar10")
