"""The symmetry group of an MLP/CNN weight space and the canonical layout that exposes it.

Neuron layers are numbered 0 (inputs) to L (outputs); weight l [B, C, n_{l+1}, n_l, *kernel]
maps neuron layer l to l + 1 and bias l [B, C, n_{l+1}] sits on neuron layer l + 1. A group
element holds, per permuted neuron layer s, a permutation P_s and (for the monomial groups)
an invertible diagonal D_s, and acts by

    W_l  ->  D_{l+1} P_{l+1} W_l P_l^T D_l^{-1}        b_l  ->  D_{l+1} P_{l+1} b_l

(kernel dims ride along: a CNN channel is one neuron). The groups of the papers:

    NP    (NFN)          every neuron layer permuted, D = I
    HNP   (NFN)          hidden layers permuted, inputs/outputs fixed, D = I
    scale (Monomial-NFN) hidden layers permuted and scaled by positive D (ReLU networks)
    sign  (Monomial-NFN) hidden layers permuted and sign-flipped, D = diag(+-1) (sine/tanh networks)

Which group a network has follows from what its hidden neurons apply (``spec.activations``,
:func:`scaling_of`): a map f commutes with D = diag(d) exactly when f(d z) = d f(z). Odd maps
(tanh, sine: f(-z) = -f(z)) give the sign group; positively homogeneous maps (ReLU, LeakyReLU,
max pooling: f(d z) = d f(z) for d > 0) give positive scaling; linear per-channel maps
(average pooling, flatten of 1x1 maps, dropout at inference) commute with both and are not
recorded. Anything else (GELU, sigmoid, SiLU, softmax, ...) commutes with neither: such a
network only has the permutation symmetries.

The canonical layout reshapes every tensor to [B, C * F, *axes] where ``axes`` are its
permuted neuron dims (descending layer order) and F folds in everything the group does
not act on: the kernel entries and the fixed (input/output) neuron dims. Equivariant
layers then only need to know how many permuted axes a tensor has and which neuron
layers they index; linear maps over the folded features are unconstrained.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from torch import Tensor

from ..spaces import MIXED, WeightSpace, WeightSpaceSpec

SCALINGS = ("none", "scale", "sign")
#: hidden-layer maps (:attr:`WeightSpaceSpec.activations` names) that commute with sign flips ...
ODD = frozenset({"identity", "tanh", "sine"})
#: ... and with positive scalings
POSITIVELY_HOMOGENEOUS = frozenset({"identity", "relu", "leaky_relu", "max_pool"})


class Group(NamedTuple):
    """Which neuron layers permute (``permute_io``: inputs and outputs too) and how the
    hidden neurons are rescaled (``scaling``: "none", "scale" or "sign")."""

    permute_io: bool = False
    scaling: str = "none"

    def permuted(self, num_layers: int) -> tuple[bool, ...]:
        """Per neuron layer 0..L: does the group permute it?"""
        return tuple(self.permute_io or 0 < s < num_layers for s in range(num_layers + 1))


NP = Group(permute_io=True)
HNP = Group(permute_io=False)
SCALE = Group(scaling="scale")
SIGN = Group(scaling="sign")


def scaling_of(spec: WeightSpaceSpec) -> str:
    """The monomial group of the networks of ``spec`` (``ws.spec``), from their activations:
    ``"sign"`` when every hidden layer applies odd maps (sine, tanh), ``"scale"`` when every
    one applies positively homogeneous maps (ReLU, LeakyReLU, max pooling). Hidden layers
    without a nonlinearity fit both; if all do (or there is no hidden layer), ``"scale"``.

    Raises ValueError naming the hidden layer and what it applies when a layer fits neither
    group (GELU, sigmoid, tanh followed by max pooling, networks of a batch that differ),
    when the layers need different groups (ReLU in one, tanh in another), and when ``spec``
    records no activations.
    """
    if spec.activations is None:
        raise ValueError("the spec records no activations (a bare state_dict or a hand-made spec), so the "
                         "symmetry group is unknown: convert the nn.Module, or pass scaling='scale' (ReLU) "
                         "or 'sign' (sine/tanh)")
    fits = {"scale", "sign"}
    for s, record in enumerate(spec.activations, start=1):
        where = f"hidden layer {s} (between weights[{s - 1}] and weights[{s}])"
        maps = set(record.split("+"))
        layer_fits = {g for g, ok in (("sign", maps <= ODD), ("scale", maps <= POSITIVELY_HOMOGENEOUS)) if ok}
        if record == MIXED:
            raise ValueError(f"{where}: its activation differs between the networks of the batch, so they share "
                             "no monomial group; use networks of one activation, a permutation model "
                             "(nfn-hnp, nft), or pass scaling='scale'|'sign'")
        if not layer_fits:
            raise ValueError(f"{where} applies {record!r}, which is neither odd (sign flips: sine, tanh) nor "
                             "positively homogeneous (positive scalings: ReLU, LeakyReLU, max pooling), so the "
                             "network has no monomial symmetry beyond permutations; use a permutation model "
                             "(nfn-hnp, nft), or pass scaling='scale'|'sign' to override")
        if not layer_fits & fits:
            raise ValueError(f"{where} applies {record!r}, which allows only {sorted(layer_fits)}, but an earlier "
                             f"hidden layer allows only {sorted(fits)}: no single monomial group fits; pass "
                             "scaling='scale'|'sign' to override")
        fits &= layer_fits
    return "scale" if "scale" in fits else "sign"


class Slot(NamedTuple):
    """Where one weight-space tensor sits in the canonical layout."""

    field: int                  # 0: weights, 1: biases
    layer: int                  # index into weights / biases
    axes: tuple[int, ...]       # neuron layers of its permuted dims, descending
    exponents: tuple[int, ...]  # power of D acting on each axis: +1 rows, -1 columns
    features: int               # kernel entries x fixed neuron counts, folded into channels


class Layout:
    """Canonical layout of the weight spaces of ``spec`` under ``group``.

    ``fold(ws)`` gives one tensor per slot (weight 0, bias 0, weight 1, ...) shaped
    [B, C * slot.features, *(n_s for s in slot.axes)]; ``unfold`` inverts it exactly.
    """

    def __init__(self, spec: WeightSpaceSpec, group: Group):
        if group.scaling not in SCALINGS:
            raise ValueError(f"Group: scaling must be one of {SCALINGS}, got {group.scaling!r}")
        if group.permute_io and group.scaling != "none":
            raise ValueError("Group: scaling symmetries act on hidden neurons only (permute_io=False)")
        self.spec = WeightSpaceSpec(*spec).validate()
        self.group = group
        self.neurons = self.spec.neurons
        permuted = group.permuted(self.spec.num_layers)
        self.slots: list[Slot] = []
        self._orders: list[tuple[int, ...]] = []
        for l, w_shape in enumerate(self.spec.weight_shapes):
            kernel = math.prod(w_shape[2:])
            dims = ((2, l + 1, 1), (3, l, -1))  # (tensor dim, neuron layer, exponent)
            self._add(0, l, dims, kernel, permuted, extra=tuple(range(4, 2 + len(w_shape))))
            self._add(1, l, dims[:1], 1, permuted, extra=())

    def _add(self, field, layer, dims, kernel, permuted, extra) -> None:
        fixed = [d for d, s, _ in dims if not permuted[s]]
        moving = [(d, s, e) for d, s, e in dims if permuted[s]]
        features = kernel * math.prod(self.neurons[s] for _, s, _ in dims if not permuted[s])
        self.slots.append(Slot(field, layer, tuple(s for _, s, _ in moving), tuple(e for *_, e in moving), features))
        self._orders.append((0, 1, *extra, *fixed, *(d for d, _, _ in moving)))

    def fold(self, ws: WeightSpace) -> list[Tensor]:
        out = []
        for slot, order in zip(self.slots, self._orders):
            t = ws[slot.field][slot.layer].permute(order)
            out.append(t.reshape(t.shape[0], -1, *(self.neurons[s] for s in slot.axes)))
        return out

    def unfold(self, tensors: Sequence[Tensor]) -> WeightSpace:
        fields: tuple[list[Tensor], list[Tensor]] = ([], [])
        for slot, order, t in zip(self.slots, self._orders, tensors):
            shape = (self.spec.weight_shapes if slot.field == 0 else self.spec.bias_shapes)[slot.layer]
            permuted_shape = [t.shape[0], -1] + [shape[d - 2] for d in order[2:]]
            inverse = sorted(range(len(order)), key=order.__getitem__)
            fields[slot.field].append(t.reshape(permuted_shape).permute(inverse))
        return WeightSpace(tuple(fields[0]), tuple(fields[1]))
