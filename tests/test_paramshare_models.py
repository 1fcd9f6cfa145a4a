"""graphnfn.paramshare.build: every model, both readouts, under its group (float64, random
MLP/CNN/transformer specs), on converted networks, under autocast, and a tiny learning test."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import converters
from graphnfn import paramshare as ps
from graphnfn.features import EdgeEncoder, NodeEncoder
from graphnfn.paramshare.encoding import FourierEncoding
from graphnfn.spaces import tensors
from nets import mlps, permute_hidden
from test_paramshare_groups import (
    act, act_attention, attention_specs, max_rel_diff, one_thread, random_space, sample_attention_element,
    sample_element, specs,
)

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
SMALL = {"hidden": 4, "head_hidden": 8}
# (name, options, group it must respect); stat and flat-mlp respect any entry permutation / nothing
CASES = [
    ("nfn-np", {}, "hnp"), ("nfn-np", {"io_embed": False}, "np"), ("nfn-hnp", {"norm": True}, "hnp"),
    ("nft", {"heads": 2}, "hnp"), ("nft", {"heads": 2, "io_embed": False}, "np"),
    ("monomial", {"scaling": "scale"}, "scale"), ("monomial", {"scaling": "sign"}, "sign"),
    ("magep", {"scaling": "scale"}, "scale"), ("magep", {"scaling": "sign"}, "sign"),
    ("stat", {"hidden": 8}, "np"),
]
# each case raw and with a 4-frequency Fourier encoding, except positive scalings (they refuse one)
FOURIER_CASES = [(*case, fourier) for case in CASES for fourier in (0, 4) if not (fourier and case[2] == "scale")]


@settings(max_examples=8)
@given(specs(max_layers=3, max_width=3), st.integers(0, 10**6))
@pytest.mark.parametrize("name, extra, group, fourier", FOURIER_CASES)
@pytest.mark.parametrize("readout", ["invariant", "equivariant"])
def test_models_respect_their_group(name, extra, group, fourier, readout, spec, seed):
    torch.manual_seed(seed)
    opts = extra if name == "stat" else {**SMALL, **extra}  # stat has a single width
    model = ps.build(name, spec, d_out=3, readout=readout, in_channels=2, fourier=fourier, edit_scale=0.01,
                     **opts).double()
    for module in model.modules():  # the equivariant readout's per-tensor scales, each its own
        if isinstance(module, ps.models.TensorScale):
            module.scale.data.uniform_(-2, 2)
    ws = random_space(spec, 2, 2, seed)
    g = sample_element(spec, group, seed + 1)
    out, moved = model(ws), model(act(ws, *g))
    if readout == "invariant":
        assert out.shape == (2, 3)
        assert max_rel_diff(moved, out) < 1e-9
    else:
        assert out.spec == spec and out.num_channels == 3
        assert max_rel_diff(moved, act(out, *g)) < 1e-9


@settings(max_examples=8)
@given(attention_specs(), st.integers(0, 10**6))
@pytest.mark.parametrize("fourier", [0, 4])
@pytest.mark.parametrize("readout", ["invariant", "equivariant"])
def test_transformer_nfn_respects_its_group(readout, fourier, spec, seed):
    torch.manual_seed(seed)
    model = ps.build("transformer-nfn", spec, d_out=3, readout=readout, in_channels=2, fourier=fourier,
                     **SMALL).double()
    ws = random_space(spec, 2, 2, seed)
    g = sample_attention_element(spec, seed + 1)
    out, moved = model(ws), model(act_attention(ws, g))
    expected = out if readout == "invariant" else act_attention(out, g)
    assert max_rel_diff(moved, expected) < 1e-8
    assert (out.shape == (2, 3)) if readout == "invariant" else (out.spec == spec and out.num_channels == 3)


@pytest.mark.parametrize("name", ["stat", "flat-mlp"])
@pytest.mark.parametrize("readout", ["invariant", "equivariant"])
def test_baselines_take_transformer_spaces(name, readout):
    spec = ps.AttentionSpec.from_dims([(2, 4, 2, 3, 5)])
    out = ps.build(name, spec, 2, readout)(ps.randn_space(spec, 3))
    assert out.shape == (3, 2) if readout == "invariant" else out.spec == spec


@settings(max_examples=10)
@given(mlps(norms=False, max_depth=3, max_width=5), st.integers(0, 2**16))
def test_invariant_models_agree_on_converted_permuted_networks(model, seed):
    """Through converters.to_weight_space: a torch network and its hidden-permuted copy."""
    permuted, _ = permute_hidden(model, torch.Generator().manual_seed(seed))
    ws = ps.concat([converters.to_weight_space(model), converters.to_weight_space(permuted)], dim=0).to(torch.float64)
    for name in ("nfn-hnp", "nfn-np", "monomial", "magep"):
        torch.manual_seed(seed)
        # permutations are in both monomial groups: override the one a GELU or SiLU net lacks
        extra = {"scaling": "scale"} if name in ps.models.MONOMIAL_MODELS else {}
        out = ps.build(name, ws.spec, 4, **SMALL, **extra).double()(ws)
        assert max_rel_diff(out[0], out[1]) < 1e-9


# ---- the Fourier input encoding ----

def _fourier_spec(name: str):
    """:func:`_small_spec`, with tanh for the monomial models (positive scalings refuse Fourier)."""
    spec = _small_spec(name)
    return spec._replace(activations=("tanh", "tanh")) if name in ps.models.MONOMIAL_MODELS else spec


@pytest.mark.parametrize("name", sorted(ps.MODELS))
def test_every_model_takes_the_fourier_encoding(name):
    spec = _fourier_spec(name)
    data = ps.randn_space(spec, 3, channels=2)
    model = ps.build(name, spec, 2, in_channels=2, fourier=4)
    expansion, encoding = {"monomial": (5, "odd-fourier4 (sign group)"), "magep": (5, "odd-fourier4 (sign group)"),
                           "transformer-nfn": (9, "fourier4 on MLP fields")}.get(name, (9, "fourier4"))
    assert model.encoding == encoding and isinstance(model.layers[0], ps.FourierEncoding)
    assert {t.shape[1] for t in tensors(model.layers[0](data))} == {2 * expansion}
    assert model(data).shape == (3, 2)
    raw = ps.build(name, spec, 2, in_channels=2)
    assert raw.encoding == "raw" and not any(isinstance(m, ps.FourierEncoding) for m in raw.modules())


def test_fourier_encoding_uses_the_graph_models_features_entry_by_entry():
    spec = ps.WeightSpaceSpec(((3, 2, 2, 2), (1, 3)), ((3,), (1,)))  # a Conv2d kernel, then a Linear
    full = ps.FourierEncoding(spec, 2, 4)
    assert torch.equal(full.weight_features.freq, EdgeEncoder(8, fourier=4).fourier.freq)
    assert torch.equal(full.bias_features.freq, NodeEncoder(8, fourier=4).fourier.freq)
    ws = ps.randn_space(spec, 1, channels=2, dtype=torch.float64)
    out = full(ws)
    entry = ws.weights[0][0, 1, 2, 0, 1, 1]  # channel 1 of one kernel entry -> channels 9..17
    assert torch.equal(out.weights[0][0, 9:18, 2, 0, 1, 1], full.weight_features(entry.view(1)))
    assert torch.equal(out.biases[1][0, 9:18, 0], full.bias_features(ws.biases[1][0, 1, :1]))
    odd = ps.FourierEncoding(spec, 2, 4, scaling="sign")
    flipped = ws.map(torch.neg)
    assert max_rel_diff(odd(flipped), odd(ws).map(torch.neg)) < 1e-12
    assert max_rel_diff(full(flipped), full(ws).map(torch.neg)) > 0.1  # the cosines are even


def test_transformer_nfn_encodes_only_its_mlp_fields():
    spec = _small_spec("transformer-nfn")
    ws = ps.randn_space(spec, 2)
    out = ps.build("transformer-nfn", spec, 1, fourier=4).layers[0](ws)
    for a, b in zip(ws[:4], out[:4]):  # query, key, value, out: the value, then zeros
        assert torch.equal(b[0][:, :1], a[0]) and not b[0][:, 1:].any()
    assert out.mlp_in[0].shape[1] == 9 and not torch.equal(out.mlp_in[0][:, 2], torch.zeros_like(out.mlp_in[0][:, 2]))


def test_fourier_falls_back_to_raw_weights_under_positive_scalings():
    """No Fourier encoding commutes with positive scalings: the documented call
    build("monomial", spec, 10, fourier=16) on a ReLU network warns and reads raw weights."""
    relu = _small_spec("monomial")
    for name in ps.models.MONOMIAL_MODELS:
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match=rf"build\('{name}'\): fourier=4 ignored"):
            model = ps.build(name, relu, 1, fourier=4)
        torch.manual_seed(0)
        raw = ps.build(name, relu, 1)
        assert model.encoding == "raw" and str(model) == str(raw)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), raw.state_dict().values()))
    with pytest.warns(UserWarning, match="positive scalings"):
        assert ps.build("monomial", _fourier_spec("monomial"), 1, fourier=4, scaling="scale").encoding == "raw"
    with pytest.raises(ValueError, match="positive-scaling group"):  # the encoding itself still refuses
        FourierEncoding(relu, 1, 4, 3.0, "scale")
    with pytest.raises(ValueError, match="fourier must be >= 0"):
        ps.build("nfn-hnp", relu, 1, fourier=-1)


# ---- zero output (learning itself: tests/test_learning.py, held out) ----

@pytest.mark.parametrize("name", ["transformer-nfn", "stat", "flat-mlp"])
def test_only_transformer_nfn_keeps_attention_fields_linear(name):
    """On a ViT's weight space, transformer-nfn's group mixes q/k/v/o entries, so they stay raw
    (zero padded); stat and flat-mlp only permute or ignore entries and get the full encoding:
    each field with the frequencies of its kind, the same numbers as the MLP fields'."""
    spec = ps.AttentionSpec.from_dims([(2, 4, 2, 2, 6)])
    data = ps.randn_space(spec, 3, channels=1)
    encoded = ps.build(name, spec, 2, fourier=4).layers[0](data)
    weights = ps.FourierEncoding(spec, 1, 4, linear_attention=False).weight_features
    if name == "transformer-nfn":
        torch.testing.assert_close(encoded.query[0][:, :1], data.query[0])
        assert (encoded.query[0][:, 1:] == 0).all()
    else:
        torch.testing.assert_close(encoded.query[0], weights(data.query[0].movedim(1, -1)).movedim(-1, 1))
    torch.testing.assert_close(encoded.mlp_in[0], weights(data.mlp_in[0].movedim(1, -1)).movedim(-1, 1))


def _small_spec(name: str):
    """A small space the model takes: one encoder block, or Conv1d, Linear, Linear (ReLU)."""
    if name == "transformer-nfn":
        return ps.AttentionSpec.from_dims([(2, 4, 2, 2, 6)])
    return ps.WeightSpaceSpec(((6, 2, 3), (5, 6), (1, 5)), ((6,), (5,), (1,)), ("relu", "relu"))


@pytest.mark.parametrize("name", sorted(ps.MODELS))
def test_edit_scale_multiplies_each_tensor_by_its_own_learned_scale(name):
    torch.manual_seed(0)
    spec = _small_spec(name)
    data = ps.randn_space(spec, 3)
    torch.manual_seed(1)
    plain = ps.build(name, spec, 1, "equivariant")
    torch.manual_seed(1)
    scaled = ps.build(name, spec, 1, "equivariant", edit_scale=0.01)
    scale = scaled.layers[-1].scale
    assert torch.all(scale == 0.01)
    with torch.no_grad():
        scale.copy_(torch.arange(1.0, len(scale) + 1))
    out = scaled(data)
    for a, b, factor in zip(tensors(plain(data)), tensors(out), scale):
        torch.testing.assert_close(b, a * factor)
    sum(t.sum() for t in tensors(out)).backward()
    assert scale.grad is not None
    invariant = ps.build(name, spec, 1, "invariant", edit_scale=0.01)  # scales only edits
    assert not any(isinstance(m, ps.models.TensorScale) for m in invariant.modules())


@pytest.mark.parametrize("name", sorted(ps.MODELS))
def test_zero_output_starts_edits_at_the_identity_and_learns(name):
    """zero_output: the equivariant output is exactly zero at first (the edit ws + model(ws)
    is the identity), and one gradient step makes it non-zero again."""
    torch.manual_seed(0)
    spec = _small_spec(name)
    data = ps.randn_space(spec, 4)
    model = ps.build(name, spec, 1, "equivariant", zero_output=True)
    assert all(torch.all(t == 0) for field in model(data).tensor_fields for t in field)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # towards the negated space, an edit every model can express
    sum(((a + b) ** 2).mean() for fa, fb in zip(model(data).tensor_fields, data.tensor_fields)
        for a, b in zip(fa, fb)).backward()
    opt.step()
    assert any(torch.any(t != 0) for field in model(data).tensor_fields for t in field)


# ---- precision, devices, errors ----

@pytest.mark.parametrize("name", sorted(ps.MODELS))
def test_autocast_matches_float32(name):
    """bfloat16 autocast (the CPU path; CUDA uses the same code) stays close to float32."""
    torch.manual_seed(0)
    spec = _small_spec(name)
    model = ps.build(name, spec, 4).eval()
    ws = ps.randn_space(spec, 8, scale=0.5)
    with torch.no_grad():
        ref = model(ws)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ws)
    assert low.shape == ref.shape
    assert float((low.float() - ref).norm() / ref.norm()) < 0.1


def test_build_refuses_bad_arguments():
    spec = ps.WeightSpaceSpec(((3, 2), (1, 3)), ((3,), (1,)))
    with pytest.raises(ValueError, match="unknown model 'nfn'"):
        ps.build("nfn", spec, 1)
    with pytest.raises(ValueError, match="readout must be one of"):
        ps.build("nfn-hnp", spec, 1, readout="node")
    with pytest.raises(TypeError, match="'transformer-nfn' needs a AttentionSpec"):
        ps.build("transformer-nfn", spec, 1)
    with pytest.raises(TypeError, match="'monomial' needs a WeightSpaceSpec"):
        ps.build("monomial", ps.AttentionSpec.from_dims([(1, 2, 1, 1, 2)]), 1)
    with pytest.raises(TypeError, match=r"build\('stat'\).*hiddne"):
        ps.build("stat", spec, 1, hiddne=3)
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec"):
        ps.build("stat", [1, 2, 3], 1)
    model = ps.build("nfn-hnp", spec, 1)
    other = ps.randn_space(ps.WeightSpaceSpec(((3, 2), (2, 3)), ((3,), (2,))), 1)
    with pytest.raises(ValueError, match=r"'nfn-hnp': weights\[1\] has shape \(2, 3\), the model was built for \(1, 3\)"):
        model(other)


def test_models_follow_their_inputs_dtype_and_device():
    spec = ps.WeightSpaceSpec(((3, 2), (1, 3)), ((3,), (1,)), ("tanh",))
    for name in ("nfn-np", "nft", "magep", "stat"):
        model = ps.build(name, spec, 2).to(torch.float64)
        out = model(ps.randn_space(spec, 2, dtype=torch.float64))
        assert out.dtype == torch.float64
        meta = ps.build(name, spec, 2).to("meta")  # no tensor is created on a fixed device
        assert meta(ps.randn_space(spec, 2, device="meta")).device.type == "meta"
