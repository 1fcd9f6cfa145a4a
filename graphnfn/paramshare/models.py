"""Whole models of the parameter-sharing family and :func:`build`.

Every model is an optional input encoding (:class:`~.encoding.FourierEncoding`), a body
(weight space -> weight space features) and a readout: invariant (pool -> MLP -> [B, d_out])
or equivariant (a last layer -> a weight space of ``d_out``-channel deltas, same spec as the
input, for editing).

Monomial-NFN and uncoupled permutations. Permute hidden layer s's neurons by P in the rows
of W_{s-1} and b_{s-1} and by a different Q in the columns of W_s: the network computes a
different function, yet the ``monomial`` invariant model gives the same output under
positive scalings, and under sign flips unless s = L - 1. Why: a linear layer equivariant
to a monomial group only combines entries with the same character (the factor D multiplies
them by, :mod:`.equivariant_linear`). Entry (j, k) of W_{s-1} carries d_j / d_k (d_j if
s = 1), entry (m, j) of W_s carries d_m / d_j (1 / d_j if s = L - 1), b_{s-1}[j] carries d_j.
With d > 0 no entry of W_s shares a character with the incoming side; with d = +-1
(1 / d = d) only the columns W_{L-1}[:, j] do, with b_{L-2}[j] (and W_0[j, :] when L = 2).
So every layer (and each entrywise nonlinearity) maps the incoming and outgoing tensors of s
separately, the pool averages each tensor over its own hidden indices, and nothing ties P to Q.

The paper's model (Tran et al., "Monomial Matrix Group Equivariant Neural Functional
Networks", NeurIPS 2024, arXiv 2409.11697; its equations as restated in a third-party
summary, since the paper's body was out of reach) is built the same way, so it has this
blindness too and we keep it: its equivariant layer (ReLU case) maps each interior weight entrywise,
mixes only over the fixed input (output) index in the first (last) layer and adds the first
layer's bias to its weights; its invariant layer is MLP o I_P o I_Delta, an entrywise
scale/sign-invariant map followed by sums over the rows/columns of each tensor on its own.
MAGEP-NFN (``magep``) multiplies consecutive weights and does see such permutations.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from ..readouts import readout_name
from ..spaces import AttentionSpec, Spec, WeightSpaceSpec, check_spec, num_entries, rebuild, shapes, tensors, validated
from .baselines import Flatten, StatEdit, StatFeatures, Unflatten
from .elementwise import Activation, ChannelLayerNorm, ChannelMap, PointwiseMLP
from .encoding import FourierEncoding
from .equivariant_linear import EquivariantLinear, MonomialLinear
from .magep import MAGEPLayer, PathInvariant
from .nft import AttentionPool, NPAttention
from .pooling import InvariantPool, MonomialPool
from .position import PositionEmbedding
from .probe import ProbeChannels
from .symmetry import HNP, NP, Group, scaling_of
from .transformer_nfn import MLPActivation, TransformerNFNInvariant, TransformerNFNLinear

READOUTS = ("invariant", "equivariant")


def mlp_head(d_in: int, d_out: int, hidden: int = 64, dropout: float = 0.0) -> nn.Sequential:
    """The invariant head: features [B, d_in] -> [B, d_out]; ``dropout`` > 0 drops hidden units
    while training (added only then, so that the parameter names of models without it stay)."""
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), *drop, nn.Linear(hidden, hidden), nn.ReLU(), *drop,
                         nn.Linear(hidden, d_out))


class WeightSpaceModel(nn.Module):
    """``layers`` applied in order to a weight space of ``spec``; checks the input spec first,
    so that a wrong network gives an error naming the model and the tensor. ``encoding``
    names the input encoding ("raw", "fourier16", ...) for result tables."""

    def __init__(self, name: str, spec: Spec, *layers: nn.Module, encoding: str = "raw"):
        super().__init__()
        self.name, self.spec, self.encoding = name, spec, encoding
        self.layers = nn.Sequential(*layers)

    def forward(self, space):
        check_spec(space, self.spec, f"paramshare model {self.name!r}")
        return self.layers(space)


class Residual(nn.Module):
    """x + sublayer(norm(x)) on weight spaces (pre-norm transformer residual)."""

    def __init__(self, norm: nn.Module, sublayer: nn.Module):
        super().__init__()
        self.norm, self.sublayer = norm, sublayer

    def forward(self, ws):
        return ws + self.sublayer(self.norm(ws))


class TensorScale(nn.Module):
    """An edit's learned scales, one per weight and bias tensor, all starting at ``init``
    (the graph models' :class:`graphnfn.models.EditScale` gives one per layer depth). A scalar
    per tensor commutes with every group the models respect (permutations, sign flips,
    positive scalings act entrywise within a tensor and map each tensor to itself)."""

    def __init__(self, spec: Spec, init: float):
        super().__init__()
        self.spec = spec
        self.scale = nn.Parameter(torch.full((len(shapes(spec)),), float(init)))

    def forward(self, space):
        return rebuild(self.spec, [t * s for t, s in zip(tensors(space), self.scale)])


class Concat(nn.Module):
    """Concatenate the [B, F_i] outputs of several invariant feature maps."""

    def __init__(self, *maps: nn.Module):
        super().__init__()
        self.maps = nn.ModuleList(maps)
        self.num_features = sum(m.num_features for m in maps)

    def forward(self, space) -> Tensor:
        return torch.cat([m(space) for m in self.maps], dim=1)


def _stack(layer: Callable[[int, int], nn.Module], activation: nn.Module, in_channels: int, hidden: int,
           depth: int, norm: Callable[[], nn.Module] | None = None) -> list[nn.Module]:
    """``depth`` x (layer(c_prev, hidden), [norm()], activation)."""
    body = []
    for i in range(depth):
        body += [layer(in_channels if i == 0 else hidden, hidden), *([norm()] if norm else []), activation]
    return body


def _readout(readout: str, body: list[nn.Module], channels: int, pool: nn.Module,
             last_layer: Callable[[int, int], nn.Module], d_out: int, head_hidden: int,
             dropout: float) -> list[nn.Module]:
    if readout == "invariant":
        return body + [pool, mlp_head(pool.num_features, d_out, head_hidden, dropout)]
    return body + [last_layer(channels, d_out)]


def nfn(spec: WeightSpaceSpec, d_out: int, readout: str, in_channels: int = 1, group: Group = HNP,
        hidden: int = 16, depth: int = 3, io_embed: bool | None = None, norm: bool = False,
        head_hidden: int = 64, dropout: float = 0.0) -> list[nn.Module]:
    """NFN (NP or HNP): [position embedding], depth x (equivariant linear, [channel layer norm], ReLU).
    ``io_embed`` defaults to True for NP (inputs/outputs need positions) and False for HNP."""
    io_embed = group.permute_io if io_embed is None else io_embed
    layer = partial(EquivariantLinear, spec, group=group)
    body: list[nn.Module] = [PositionEmbedding(spec, in_channels, io=True)] if io_embed else []
    body += _stack(layer, Activation(nn.ReLU()), in_channels, hidden, depth,
                   partial(ChannelLayerNorm, spec, hidden) if norm else None)
    return _readout(readout, body, hidden, InvariantPool(spec, hidden, group), layer, d_out, head_hidden, dropout)


def nft(spec: WeightSpaceSpec, d_out: int, readout: str, in_channels: int = 1, hidden: int = 16,
        heads: int = 4, depth: int = 2, latents: int = 4, io_embed: bool = True,
        head_hidden: int = 64, dropout: float = 0.0) -> list[nn.Module]:
    """NFT: channel lift to ``hidden`` channels, layer/io position embedding, depth x pre-norm
    (NP attention, pointwise MLP)."""
    body: list[nn.Module] = [ChannelMap(spec, in_channels, hidden), PositionEmbedding(spec, hidden, io=io_embed)]
    for _ in range(depth):
        body += [Residual(ChannelLayerNorm(spec, hidden), NPAttention(spec, hidden, heads)),
                 Residual(ChannelLayerNorm(spec, hidden), PointwiseMLP(spec, hidden, 2 * hidden))]
    if readout == "invariant":
        pool = AttentionPool(spec, hidden, latents, heads)
        return body + [pool, mlp_head(pool.num_features, d_out, head_hidden, dropout)]
    return body + [ChannelLayerNorm(spec, hidden), ChannelMap(spec, hidden, d_out)]


def _activation(scaling: str) -> nn.Module:
    # ReLU commutes with positive scalings, tanh (odd) with sign flips
    return nn.ReLU() if scaling == "scale" else nn.Tanh()


def monomial(spec: WeightSpaceSpec, d_out: int, readout: str, in_channels: int = 1, scaling: str | None = None,
             hidden: int = 16, depth: int = 3, head_hidden: int = 64, dropout: float = 0.0) -> list[nn.Module]:
    """Monomial-NFN: depth x (monomial linear, ReLU or tanh), monomial pool. ``scaling``:
    "scale" or "sign"; None derives it from ``spec.activations`` (:func:`.symmetry.scaling_of`)."""
    scaling = scaling or scaling_of(spec)
    layer = partial(MonomialLinear, spec, scaling=scaling)
    body = _stack(layer, Activation(_activation(scaling)), in_channels, hidden, depth)
    return _readout(readout, body, hidden, MonomialPool(spec, hidden, scaling), layer, d_out, head_hidden, dropout)


def magep(spec: WeightSpaceSpec, d_out: int, readout: str, in_channels: int = 1, scaling: str | None = None,
          hidden: int = 16, depth: int = 2, head_hidden: int = 64, dropout: float = 0.0) -> list[nn.Module]:
    """MAGEP-NFN: depth x (polynomial layer, ReLU or tanh), monomial pool + path invariants.
    ``scaling`` as in :func:`monomial`."""
    scaling = scaling or scaling_of(spec)
    layer = partial(MAGEPLayer, spec, scaling=scaling)
    body = _stack(layer, Activation(_activation(scaling)), in_channels, hidden, depth)
    pool = Concat(MonomialPool(spec, hidden, scaling), PathInvariant(spec, hidden))
    return _readout(readout, body, hidden, pool, layer, d_out, head_hidden, dropout)


def transformer_nfn(spec: AttentionSpec, d_out: int, readout: str, in_channels: int = 1, hidden: int = 8,
                    depth: int = 2, summary: int | None = None, head_hidden: int = 64,
                    dropout: float = 0.0) -> list[nn.Module]:
    """Transformer-NFN: depth x (equivariant layer, ReLU on the MLP fields), invariant features."""
    layer = partial(TransformerNFNLinear, spec, summary=summary)
    body = _stack(layer, MLPActivation(nn.ReLU()), in_channels, hidden, depth)
    return _readout(readout, body, hidden, TransformerNFNInvariant(spec, hidden), layer, d_out, head_hidden, dropout)


def stat(spec: Spec, d_out: int, readout: str, in_channels: int = 1, hidden: int = 64,
         dropout: float = 0.0) -> list[nn.Module]:
    """Statistics baseline: per-tensor statistics -> MLP, or per-entry edits from value + statistics."""
    if readout == "invariant":
        feats = StatFeatures(spec, in_channels)
        return [feats, mlp_head(feats.num_features, d_out, hidden, dropout)]
    return [StatEdit(spec, in_channels, d_out, hidden)]


def flat_mlp(spec: Spec, d_out: int, readout: str, in_channels: int = 1, hidden: int = 64,
             dropout: float = 0.0) -> list[nn.Module]:
    """MLP on the flattened weights (no symmetry): -> [B, d_out], or -> every entry's delta."""
    if readout == "invariant":
        return [Flatten(), mlp_head(in_channels * num_entries(spec), d_out, hidden, dropout)]
    out = Unflatten(spec, d_out)
    return [Flatten(), mlp_head(in_channels * num_entries(spec), out.num_features, hidden, dropout), out]


#: the models whose group scales hidden neurons (``scaling`` option)
MONOMIAL_MODELS = ("monomial", "magep")
MODELS: dict[str, tuple[Callable[..., list[nn.Module]], type]] = {
    "nfn-np": (partial(nfn, group=NP), WeightSpaceSpec),
    "nfn-hnp": (partial(nfn, group=HNP), WeightSpaceSpec),
    "nft": (nft, WeightSpaceSpec),
    "monomial": (monomial, WeightSpaceSpec),
    "magep": (magep, WeightSpaceSpec),
    "transformer-nfn": (transformer_nfn, AttentionSpec),
    "stat": (stat, object),
    "flat-mlp": (flat_mlp, object),
}


def _output_layer(last: nn.Module) -> nn.Module:
    """The map that makes an equivariant readout's values: the last Linear of an MLP readout
    (stat's per-entry MLP, flat-mlp's head), else the whole last layer (an equivariant linear
    layer or channel map: each of its parameters feeds the output directly)."""
    mlp = last.mlp if isinstance(last, StatEdit) else last
    return mlp[-1] if isinstance(mlp, nn.Sequential) else last


def _group_scaling(name: str, spec: Spec, options: dict) -> tuple[str, Spec]:
    """(how the model's group acts on hidden neurons: "none", "scale" or "sign"; the spec the
    model checks its inputs against). Monomial models without an explicit ``scaling`` take
    it from ``spec.activations`` (and keep them, so a network of other activations is
    refused); every other model drops the activations, which its group does not depend on."""
    if name in MONOMIAL_MODELS and options.get("scaling") is None:
        options["scaling"] = scaling_of(spec)
        return options["scaling"], spec
    scaling = options.get("scaling", "none") if name in MONOMIAL_MODELS else "none"
    return scaling, spec._replace(activations=None) if isinstance(spec, WeightSpaceSpec) else spec


def build(name: str, spec: Spec, d_out: int, readout: str = "invariant", in_channels: int = 1,
          zero_output: bool = False, edit_scale: float | None = None, fourier: int = 0, fourier_sigma: float = 3.0,
          probes: Tensor | None = None, probe_act_param: float | None = None, input_scales: dict | None = None,
          **options) -> WeightSpaceModel:
    """A parameter-sharing model for weight spaces of ``spec``.

    Args:
        name: one of ``nfn-np``, ``nfn-hnp``, ``nft``, ``monomial``, ``magep``,
            ``transformer-nfn`` (needs an :class:`AttentionSpec`), ``stat``, ``flat-mlp``.
        spec: ``ws.spec`` of the inputs (WeightSpaceSpec for MLPs/CNNs, AttentionSpec for
            transformers). ``monomial`` and ``magep`` take their group from its activations
            (:func:`.symmetry.scaling_of`: sign flips for sine/tanh networks, positive scalings
            for ReLU/LeakyReLU ones; ValueError for any other activation, for mixed ones and for
            unknown ones) unless ``scaling="scale"|"sign"`` overrides it.
        d_out: output width ([B, d_out]) or output channels (equivariant readout).
        readout: "invariant" -> [B, d_out]; "equivariant" -> a space of ``spec`` with ``d_out``
            channels (per-entry deltas).
        in_channels: channels C of the input space.
        zero_output: equivariant readout: start with the output layer at zero, so that an
            edit ``ws + model(ws)`` starts as the identity and is learnt from there.
        edit_scale: equivariant readout: multiply the output by learned per-tensor scales
            starting at this value (:class:`TensorScale`); None: unscaled.
        fourier: F > 0 puts a :class:`~.encoding.FourierEncoding` first: every weight, bias and
            kernel entry -> Gaussian Fourier features with F frequencies, the graph models'
            features (C -> C (1 + 2F) channels). Each model stays equivariant to its own group:
            odd features only under sign flips (C (1 + F) channels), MLP fields only for
            ``transformer-nfn`` (``stat`` and ``flat-mlp`` encode attention fields too), and none
            under positive scalings (ReLU networks in ``monomial`` / ``magep``: no Fourier
            encoding commutes with them, so the model reads raw weights and warns).
            ``model.encoding`` names what was used ("raw" for F = 0).
        fourier_sigma: standard deviation of the frequencies.
        probes: [P, n_0] probe inputs (MLPs and INRs): every neuron's activations on them join the
            biases as P more channels (:class:`~.probe.ProbeChannels`, equivariant under every
            model's group), the graph models' probe features; needs ``spec.activations`` and
            ``in_channels`` 1. Not for transformers or CNNs.
        probe_act_param: the hidden activations' parameter for those runs (SIREN's w0); None: the
            activation module's default.
        input_scales: the :class:`graphnfn.training.WeightScaler` scales of the inputs, undone
            before the probe runs (a rescaled network computes another function).
        options: the model's hyper-parameters (see :func:`nfn`, :func:`nft`, :func:`monomial`,
            :func:`magep`, :func:`transformer_nfn`, :func:`stat`, :func:`flat_mlp`), e.g. ``hidden=32``;
            every one takes ``dropout`` (its MLP head's hidden units, while training).
    """
    if name not in MODELS:
        raise ValueError(f"paramshare.build: unknown model {name!r}; choose from {sorted(MODELS)}")
    readout = readout_name(readout, READOUTS, "paramshare.build: ")
    if fourier < 0:
        raise ValueError(f"paramshare.build: fourier must be >= 0, got {fourier}")
    make, spec_type = MODELS[name]
    spec = spec_in = validated(spec, f"paramshare.build({name!r})")
    if not isinstance(spec, spec_type):
        raise TypeError(f"paramshare.build: {name!r} needs a {spec_type.__name__}, got a {type(spec).__name__}")
    try:
        scaling, spec = _group_scaling(name, spec, options)
        if fourier and scaling == "scale":
            warnings.warn(f"paramshare.build({name!r}): fourier={fourier} ignored: {name} on ReLU networks is "
                          "equivariant to positive scalings, which no Fourier encoding commutes with; it reads "
                          "raw weights", stacklevel=2)
            fourier = 0
        encoder = (FourierEncoding(spec, in_channels, fourier, fourier_sigma, scaling,
                                   linear_attention=name == "transformer-nfn") if fourier else None)
        if probes is not None:  # the run needs the activations, which only monomial models keep in ``spec``
            encoder = ProbeChannels(spec_in, probes, in_channels, probe_act_param, input_scales, encoder)
    except ValueError as e:
        raise ValueError(f"paramshare.build({name!r}): {e}") from e
    try:
        modules = make(spec, d_out, readout, in_channels=encoder.out_channels if encoder else in_channels, **options)
    except TypeError as e:  # an unknown option: name the model
        raise TypeError(f"paramshare.build({name!r}): {e}") from e
    if zero_output and readout == "equivariant":
        last = next(m for m in reversed(modules) if any(True for _ in m.parameters()))
        for param in _output_layer(last).parameters():
            nn.init.zeros_(param)
    if edit_scale and readout == "equivariant":
        modules.append(TensorScale(spec, edit_scale))
    return WeightSpaceModel(name, spec, *([encoder] if encoder else []), *modules,
                            encoding=encoder.description if encoder else "raw")
