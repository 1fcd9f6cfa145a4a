"""Every paramshare layer is equivariant (or invariant) under its own group, in float64, on
random MLP and CNN weight spaces; the linear layers span exactly the equivariant maps
(NFN's and Monomial-NFN's parameter counts); and the checks fail on the wrong group."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, strategies as st
from torch import nn

from graphnfn import paramshare as ps
from graphnfn.spaces import num_entries
from test_paramshare_groups import (
    GROUPS, act, act_attention, attention_specs, max_rel_diff, one_thread, random_space, sample_attention_element,
    sample_element, specs,
)

GROUP_OF = {"np": ps.NP, "hnp": ps.HNP, "scale": ps.SCALE, "sign": ps.SIGN}
seeds = st.integers(0, 10**6)
pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def equivariance_error(layer: nn.Module, spec, group: str, seed: int, channels: int = 2, invariant: bool = False) -> float:
    ws = random_space(spec, 2, channels, seed)
    g = sample_element(spec, group, seed + 1)
    moved_out = layer(act(ws, *g))
    out = layer(ws)
    return max_rel_diff(moved_out, out if invariant else act(out, *g))


@given(specs(), st.sampled_from(GROUPS), seeds)
def test_layout_fold_unfold_is_exact(spec, group, seed):
    layout = ps.Layout(spec, GROUP_OF[group])
    ws = random_space(spec, 2, 3, seed)
    folded = layout.fold(ws)
    assert [tuple(t.shape[2:]) for t in folded] == [tuple(layout.neurons[s] for s in slot.axes) for slot in layout.slots]
    back = layout.unfold(folded)
    assert all(torch.equal(a, b) for a, b in zip(back.weights + back.biases, ws.weights + ws.biases))


@given(specs(), st.sampled_from(GROUPS), seeds)
def test_linear_layers_are_equivariant_under_their_group(spec, group, seed):
    layer = ps.EquivariantLinear(spec, 2, 3, GROUP_OF[group]).double()
    assert equivariance_error(layer, spec, group, seed) < 1e-10


@given(specs(min_layers=2), seeds)
def test_named_linear_layers(spec, seed):
    for layer, group in ((ps.NPLinear(spec, 2, 2), "np"), (ps.HNPLinear(spec, 2, 2), "hnp"),
                         (ps.MonomialLinear(spec, 2, 2, "scale"), "scale"), (ps.MonomialLinear(spec, 2, 2, "sign"), "sign")):
        assert layer.group == GROUP_OF[group]
        assert equivariance_error(layer.double(), spec, group, seed) < 1e-10


@pytest.mark.parametrize("layer_group, test_group", [
    ("hnp", "np"),      # HNP mixes input/output indices as features: not NP
    ("np", "scale"),    # averages over rows mix different scalings
    ("sign", "scale"),  # sign flips tie W_L's columns to b_{L-1}: d vs 1/d
])
@given(spec=specs(min_layers=2, min_width=2), seed=seeds)
def test_the_equivariance_check_fails_for_the_wrong_group(layer_group, test_group, spec, seed):
    layer = ps.EquivariantLinear(spec, 2, 2, GROUP_OF[layer_group]).double()
    assert equivariance_error(layer, spec, test_group, seed) > 1e-6


# ---- parameter counts: NFN's closed form and the dimension of the commutant ----

@given(specs(max_layers=6, kinds=("mlp",)), st.integers(1, 4), st.integers(1, 4))
def test_np_parameter_count_matches_nfn(spec, c_in, c_out):
    """NFN's NP layer on an L-layer MLP: c_in c_out (4L^2 + 10L - 4) + 2L c_out, whatever the widths."""
    L = spec.num_layers
    count = sum(p.numel() for p in ps.NPLinear(spec, c_in, c_out).parameters())
    assert count == c_in * c_out * (4 * L * L + 10 * L - 4) + 2 * L * c_out


def generators(spec, group: str) -> list[tuple[list, list]]:
    """Group elements generating ``group`` (for the commutant): a transposition and a cycle of
    every permuted layer, one generic positive scaling, every single sign flip."""
    n = spec.neurons
    L = len(n) - 1
    ident = ([torch.arange(w) for w in n], [torch.ones(w, dtype=torch.float64) for w in n])
    gens = []
    for s in range(L + 1):
        if (group == "np" or 0 < s < L) and n[s] > 1:
            for p in (torch.tensor([1, 0, *range(2, n[s])]), torch.roll(torch.arange(n[s]), 1)):
                perms = list(ident[0])
                perms[s] = p
                gens.append((perms, ident[1]))
    gen = torch.Generator().manual_seed(0)
    if group == "scale":
        gens.append((ident[0], [torch.exp(torch.randn(w, generator=gen, dtype=torch.float64)) if 0 < s < L
                                else torch.ones(w, dtype=torch.float64) for s, w in enumerate(n)]))
    if group == "sign":
        for s in range(1, L):
            for j in range(n[s]):
                diags = list(ident[1])
                diags[s] = torch.ones(n[s], dtype=torch.float64).index_fill(0, torch.tensor([j]), -1.0)
                gens.append((ident[0], diags))
    return gens


def rep(spec, element) -> torch.Tensor:
    """The matrix of a group element on the flattened one-channel space."""
    N = num_entries(spec)
    basis = ps.unflatten(spec, torch.eye(N, dtype=torch.float64), 1)
    return ps.flatten(act(basis, *element)).T.contiguous()


def null_dim(gram: torch.Tensor) -> int:
    eig = torch.linalg.eigvalsh(gram)
    return int((eig < 1e-9 * max(float(eig.max()), 1.0)).sum())


@pytest.mark.parametrize("group", GROUPS)
@given(spec=specs(max_layers=3, min_width=2, max_width=3, kinds=("mlp", "conv1d")))
def test_linear_layers_span_all_equivariant_affine_maps(group, spec):
    """The layer's maps (one per weight parameter) are linearly independent, equivariant, and as many
    as the dimension of the space of matrices commuting with the group: the layer is the full
    parameter-sharing layer, and its bias count is the dimension of the invariant vectors."""
    N = num_entries(spec)
    assume(N <= 28)
    reps = [rep(spec, g) for g in generators(spec, group)]
    eye = torch.eye(N, dtype=torch.float64)
    constraints = [torch.kron(eye, r.T.contiguous()) - torch.kron(r, eye) for r in reps]  # M r - r M, row-major vec(M)
    commutant = null_dim(sum(c.T @ c for c in constraints)) if reps else N * N
    invariant = null_dim(sum((r - eye).T @ (r - eye) for r in reps)) if reps else N

    layer = ps.EquivariantLinear(spec, 1, 1, GROUP_OF[group]).double()
    basis = ps.unflatten(spec, eye, 1)
    maps, constants = [], []
    with torch.no_grad():
        params = list(layer.weights) + list(layer.biases)
        for p in params:
            p.zero_()
        for bank, out in ((layer.weights, maps), (layer.biases, constants)):
            for p in bank:
                for k in range(p.numel()):
                    p.view(-1)[k] = 1
                    out.append(ps.flatten(layer(basis)).T)  # [N, N]: column i = image of e_i
                    p.view(-1)[k] = 0
    maps_t = torch.stack(maps).flatten(1)
    assert torch.linalg.matrix_rank(maps_t) == len(maps) == commutant
    for m, r in zip(maps[:: max(1, len(maps) // 20)], reps[:4]):
        assert torch.allclose(m @ r, r @ m, atol=1e-12)
    consts = torch.stack([c[:, 0] for c in constants]) if constants else torch.zeros(0, N, dtype=torch.float64)
    assert len(constants) == invariant and (not constants or torch.linalg.matrix_rank(consts) == invariant)


# ---- pools ----

@given(specs(), st.sampled_from(GROUPS), seeds)
def test_pools_are_invariant(spec, group, seed):
    pool = ps.InvariantPool(spec, 3, GROUP_OF[group])
    out = pool(random_space(spec, 2, 3, seed))
    assert out.shape == (2, pool.num_features)
    assert equivariance_error(pool, spec, group, seed, channels=3, invariant=True) < 1e-10


@given(specs(min_layers=2, min_width=2), seeds)
def test_named_pools_and_their_failures(spec, seed):
    assert equivariance_error(ps.NPPool(spec, 2), spec, "np", seed, invariant=True) < 1e-10
    assert equivariance_error(ps.HNPPool(spec, 2), spec, "hnp", seed, invariant=True) < 1e-10
    assert equivariance_error(ps.MonomialPool(spec, 2, "scale"), spec, "scale", seed, invariant=True) < 1e-10
    assert equivariance_error(ps.MonomialPool(spec, 2, "sign"), spec, "sign", seed, invariant=True) < 1e-10
    # the wrong group is caught
    assert equivariance_error(ps.HNPPool(spec, 2), spec, "np", seed, invariant=True) > 1e-6
    assert equivariance_error(ps.HNPPool(spec, 2), spec, "scale", seed, invariant=True) > 1e-6
    assert equivariance_error(ps.MonomialPool(spec, 2, "sign"), spec, "scale", seed, invariant=True) > 1e-6


# ---- per-entry layers and position embeddings ----

@given(specs(), seeds)
def test_per_entry_layers_are_np_equivariant(spec, seed):
    for layer in (ps.ChannelMap(spec, 2, 3), ps.PointwiseMLP(spec, 2, 5), ps.ChannelLayerNorm(spec, 2),
                  ps.Activation(nn.GELU())):
        assert equivariance_error(layer.double(), spec, "np", seed) < 1e-10


@given(specs(), seeds)
def test_channel_maps_and_matching_activations_commute_with_scalings(spec, seed):
    assert equivariance_error(ps.ChannelMap(spec, 2, 3, bias=False).double(), spec, "scale", seed) < 1e-10
    assert equivariance_error(ps.Activation(nn.ReLU()), spec, "scale", seed) < 1e-10
    assert equivariance_error(ps.Activation(nn.Tanh()), spec, "sign", seed) < 1e-10


@given(specs(min_width=2), seeds)
def test_position_embedding_breaks_only_the_io_symmetry(spec, seed):
    assert equivariance_error(ps.PositionEmbedding(spec, 2).double(), spec, "hnp", seed) < 1e-10
    assert equivariance_error(ps.PositionEmbedding(spec, 2, io=False).double(), spec, "np", seed) < 1e-10
    assert equivariance_error(ps.PositionEmbedding(spec, 2).double(), spec, "np", seed) > 1e-6


# ---- NFT ----

@given(specs(), st.sampled_from([(4, 1), (4, 2), (6, 3)]), seeds)
def test_np_attention_is_np_equivariant(spec, dims, seed):
    channels, heads = dims
    layer = ps.NPAttention(spec, channels, heads).double()
    assert equivariance_error(layer, spec, "np", seed, channels=channels) < 1e-10


@given(specs(), seeds)
def test_attention_pool_is_np_invariant(spec, seed):
    pool = ps.AttentionPool(spec, 4, latents=3, heads=2).double()
    assert pool(random_space(spec, 2, 4, seed)).shape == (2, pool.num_features)
    assert equivariance_error(pool, spec, "np", seed, channels=4, invariant=True) < 1e-10


def test_np_attention_rejects_channels_not_divisible_by_heads():
    spec = ps.WeightSpaceSpec(((3, 2), (1, 3)), ((3,), (1,)))
    with pytest.raises(ValueError, match="divisible by heads"):
        ps.NPAttention(spec, 6, 4)


# ---- MAGEP ----

@given(specs(), st.sampled_from(["scale", "sign"]), seeds)
def test_magep_layer_is_equivariant(spec, scaling, seed):
    layer = ps.MAGEPLayer(spec, 2, 3, scaling).double()
    assert equivariance_error(layer, spec, scaling, seed) < 1e-10
    invariant = ps.PathInvariant(spec, 2)
    assert invariant(random_space(spec, 2, 2, seed)).shape == (2, invariant.num_features)
    assert equivariance_error(invariant, spec, scaling, seed, invariant=True) < 1e-10


@given(specs(min_layers=2, min_width=2), seeds)
def test_magep_layer_is_polynomial_and_the_check_catches_a_wrong_group(spec, seed):
    layer = ps.MAGEPLayer(spec, 2, 2, "scale").double()
    ws = random_space(spec, 2, 2, seed)
    assert max_rel_diff(layer(ws), layer.linear(ws)) > 1e-6  # the product terms contribute
    assert equivariance_error(layer, spec, "np", seed) > 1e-6  # not invariant to input permutations


# ---- Transformer-NFN ----

def attention_error(layer, spec, seed, channels=2, invariant=False) -> float:
    ws = random_space(spec, 2, channels, seed)
    g = sample_attention_element(spec, seed + 1)
    out = layer(ws)
    return max_rel_diff(layer(act_attention(ws, g)), out if invariant else act_attention(out, g))


@given(attention_specs(), seeds)
def test_transformer_nfn_layers_are_equivariant(spec, seed):
    assert attention_error(ps.TransformerNFNLinear(spec, 2, 3).double(), spec, seed) < 1e-9
    assert attention_error(ps.TransformerNFNLinear(spec, 2, 2, summary=5).double(), spec, seed) < 1e-9
    assert attention_error(ps.MLPActivation(nn.ReLU()), spec, seed) < 1e-12
    invariant = ps.TransformerNFNInvariant(spec, 2).double()
    assert invariant(random_space(spec, 2, 2, seed)).shape == (2, invariant.num_features)
    assert attention_error(invariant, spec, seed, invariant=True) < 1e-9


@given(attention_specs(min_head_dim=2), seeds)
def test_a_pointwise_activation_on_attention_weights_breaks_the_group(spec, seed):
    assert attention_error(ps.Activation(nn.ReLU()), spec, seed) > 1e-6


# ---- errors ----

def test_layers_name_the_mismatch():
    spec = ps.WeightSpaceSpec(((3, 2), (1, 3)), ((3,), (1,)))
    layer = ps.HNPLinear(spec, 1, 2)
    other = random_space(ps.WeightSpaceSpec(((4, 2), (1, 4)), ((4,), (1,))), 1, 1)
    with pytest.raises(ValueError, match=r"HNPLinear: weights\[0\] has shape \(4, 2\), the model was built for \(3, 2\)"):
        layer(other)
    with pytest.raises(ValueError, match="expected 1 channels, got 2"):
        layer(random_space(spec, 1, 2).map(lambda t: t.float()))
    with pytest.raises(ValueError, match="bias 0 has shape"):
        ps.NPLinear(ps.WeightSpaceSpec(((3, 2),), ((2,),)), 1, 1)
    with pytest.raises(ValueError, match="weight 1 takes 4 inputs"):
        ps.NPLinear(ps.WeightSpaceSpec(((3, 2), (1, 4)), ((3,), (1,))), 1, 1)
    with pytest.raises(ValueError, match="scaling must be"):
        ps.MonomialLinear(spec, 1, 1, "relu")
    with pytest.raises(ValueError, match="hidden neurons only"):
        ps.EquivariantLinear(spec, 1, 1, ps.Group(permute_io=True, scaling="scale"))
