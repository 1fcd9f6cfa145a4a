"""Equivariant linear layers on MLP/CNN weight spaces: NFN's NP and HNP layers
(Zhou et al., "Permutation Equivariant Neural Functionals", 2023) and Monomial-NFN's
layers (Tran et al., "Monomial Matrix Group Equivariant Neural Functional Networks", 2024).

Derivation (parameter sharing). In the canonical layout (:mod:`.symmetry`) every tensor t
is indexed by its permuted axes (each naming a neuron layer) and a free feature index. A
linear map out[o, x] = sum_{t, y} c(x, y) in[t, y] commutes with the permutations iff c is
constant on the orbits of index pairs (x, y). For a neuron layer s that indexes both x and
y the pair of indices is either equal or different (2 orbits, widths >= 2); an index only in
x is broadcast, an index only in y is averaged. So the basis maps from t to o are: choose
the set S of shared neuron layers whose indices are tied; average t over its other axes and
broadcast over o's other axes. There are 2^|axes(o) & axes(t)| of them per (o, t) pair, each
with a free (features_o x features_t) matrix, which is exactly NFN's parameter count (NP:
c_in c_out (4L^2 + 10L - 4) + 2L c_out for an L-layer MLP; HNP adds the input/output widths).
Means instead of sums keep the scale independent of the widths, as in NFN.

With the monomial groups every entry also carries a character: entry (j, k) of a canonical
tensor scales by prod_s d_s(index_s)^(exponent_s). A diagonal action only lets entries with
the same character talk to each other, and different indices give different characters, so
no average or broadcast survives: S must be all of axes(o) = axes(t), with equal exponents
(positive scaling) or any exponents (sign flips, where d = 1/d). A constant bias is allowed
only on entries with no character (tensors whose neurons are all fixed). This is the full
Monomial-NFN layer: per-entry channel mixing for hidden weights, mixing over the fixed index
for the first/last layer, the first layer's weights with its bias, and for sign flips also the
last layer's columns with the bias of the neurons they read.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .symmetry import HNP, NP, Group, Layout, Slot
from ..spaces import WeightSpace, WeightSpaceSpec, check_spec


def channel_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Apply ``weight`` [c_out, c_in] to the channel dim 1 of ``x`` [B, c_in, ...]."""
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


def reduce_to(x: Tensor, slot: Slot, keep: tuple[int, ...]) -> Tensor:
    """Average canonical tensor ``x`` of ``slot`` over its axes whose neuron layer is not in ``keep``."""
    dims = [2 + i for i, s in enumerate(slot.axes) if s not in keep]
    return x.mean(dim=dims) if dims else x


def broadcast_shape(x: Tensor, slot: Slot, kept: tuple[int, ...]) -> list[int]:
    """Shape that lets ``x`` (dims for the layers ``kept``) broadcast over the axes of ``slot``."""
    sizes = iter(x.shape[2:])
    return [x.shape[0], x.shape[1], *(next(sizes) if s in kept else 1 for s in slot.axes)]


class EquivariantLinear(nn.Module):
    """The most general affine map between weight-space features that commutes with ``group``.

    Args:
        spec: layer shapes (``ws.spec``); CNN weights [n_out, n_in, *kernel] are allowed.
        in_channels, out_channels: channels C of the input and output weight spaces.
        group: the symmetry group (:data:`NP`, :data:`HNP`, :data:`SCALE`, :data:`SIGN`).
        invariant_features: width of an optional extra invariant vector [B, F] that joins
            every averaged-to-a-constant term (used by Transformer-NFN for attention summaries).

    Shapes: ``WeightSpace`` with weights [B, in_channels, n_out, n_in, *kernel] and biases
    [B, in_channels, n_out] -> the same layout with ``out_channels``.
    """

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, group: Group,
                 invariant_features: int = 0):
        super().__init__()
        self.layout = Layout(spec, group)
        self.in_channels, self.out_channels, self.group = in_channels, out_channels, group
        self.invariant_features = invariant_features
        slots = self.layout.slots
        self.terms: list[tuple[int, tuple[int, ...], tuple[int, ...], bool]] = []  # (out, kept, inputs, extra)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.has_bias: list[bool] = []
        for o, out in enumerate(slots):
            first = len(self.weights)
            for kept in self._kept_sets(out):
                inputs = tuple(t for t, slot in enumerate(slots) if self._allowed(out, slot, kept))
                extra = invariant_features > 0 and not kept
                width = sum(in_channels * slots[t].features for t in inputs) + (invariant_features if extra else 0)
                if width:
                    self.terms.append((o, kept, inputs, extra))
                    self.weights.append(nn.Parameter(torch.empty(out_channels * out.features, width)))
            self.has_bias.append(group.scaling == "none" or not out.axes)
            self.biases.append(nn.Parameter(torch.empty(out_channels * out.features if self.has_bias[-1] else 0)))
            fan_in = sum(w.shape[1] for w in self.weights[first:])
            bound = 1 / math.sqrt(max(fan_in, 1))
            for w in self.weights[first:]:
                nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(self.biases[-1], -bound, bound)

    def _kept_sets(self, out: Slot):
        if self.group.scaling != "none":
            return [out.axes]
        return [tuple(s for s, keep in zip(out.axes, mask) if keep)
                for mask in itertools.product((True, False), repeat=len(out.axes))]

    def _allowed(self, out: Slot, slot: Slot, kept: tuple[int, ...]) -> bool:
        if self.group.scaling == "none":
            return set(kept) <= set(slot.axes)
        return slot.axes == out.axes and (self.group.scaling == "sign" or slot.exponents == out.exponents)

    def forward(self, ws: WeightSpace, invariants: Tensor | None = None) -> WeightSpace:
        check_spec(ws, self.layout.spec, type(self).__name__)
        if ws.num_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected {self.in_channels} channels, got {ws.num_channels}")
        if (invariants is None) != (self.invariant_features == 0):
            raise ValueError(f"{type(self).__name__}: built with invariant_features={self.invariant_features}, "
                             f"called with invariants={'None' if invariants is None else tuple(invariants.shape)}")
        slots = self.layout.slots
        xs = self.layout.fold(ws)
        reduced: dict[tuple[int, tuple[int, ...]], Tensor] = {}
        outs: list[Tensor | None] = [None] * len(slots)
        for (o, kept, inputs, extra), weight in zip(self.terms, self.weights):
            parts = [reduced.setdefault((t, kept), reduce_to(xs[t], slots[t], kept)) for t in inputs]
            if extra:
                parts.append(invariants)
            y = channel_linear(torch.cat(parts, dim=1), weight)
            y = y.reshape(broadcast_shape(y, slots[o], kept))
            outs[o] = y if outs[o] is None else outs[o] + y
        for o, slot in enumerate(slots):
            if self.has_bias[o]:
                outs[o] = outs[o] + self.biases[o].view(1, -1, *(1,) * len(slot.axes))
        return self.layout.unfold(outs)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, group={self.group}"


class NPLinear(EquivariantLinear):
    """NFN's NP layer: equivariant to permutations of every neuron layer, inputs and outputs
    included (use a position embedding to tell inputs/outputs apart)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int):
        super().__init__(spec, in_channels, out_channels, NP)


class HNPLinear(EquivariantLinear):
    """NFN's HNP layer: equivariant to permutations of the hidden neurons; input and
    output neurons keep their identity (their indices become feature dims)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int):
        super().__init__(spec, in_channels, out_channels, HNP)


class MonomialLinear(EquivariantLinear):
    """Monomial-NFN layer: equivariant to hidden-neuron permutations times positive
    scalings (``scaling="scale"``, ReLU networks) or sign flips (``"sign"``, sine/tanh)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, scaling: str = "scale"):
        if scaling not in ("scale", "sign"):
            raise ValueError(f"MonomialLinear: scaling must be 'scale' or 'sign', got {scaling!r}")
        super().__init__(spec, in_channels, out_channels, Group(scaling=scaling))
