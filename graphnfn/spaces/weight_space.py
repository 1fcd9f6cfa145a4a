"""Weight-space features as a plain tuple of tensors (the input of NFN-style layers).

For an L-layer MLP or CNN with C feature channels per weight:
    weights[l]  [B, C, n_out_l, n_in_l (, kernel dims)]
    biases[l]   [B, C, n_out_l]
    activations (optional, not a tensor) what each hidden neuron layer applies, see
                :class:`WeightSpaceSpec`; None when unknown

The activations decide the monomial symmetry group (:func:`graphnfn.paramshare.scaling_of`). When
spaces are put together (:func:`concat`, ``+``) the record stays sound: a hidden layer
whose networks differ becomes :data:`MIXED`, and a batch with an unknown network is unknown.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

#: the activation record of a hidden layer whose networks differ (see :func:`merge_activations`)
MIXED = "mixed"


class WeightSpaceSpec(NamedTuple):
    """Layer shapes without batch and channel dims: what layer builders take.

    ``weight_shapes[l]`` is (n_{l+1}, n_l, *kernel) and ``bias_shapes[l]`` is (n_{l+1},):
    layer l maps neuron layer l to neuron layer l + 1, so the network has L + 1 neuron
    layers n_0 (inputs) ... n_L (outputs).

    ``activations[s - 1]`` names what hidden neuron layer s (1 <= s < L) applies between
    weight s - 1 and weight s: a :class:`graphnfn.graph.Activation` name in lower case
    ("relu", "leaky_relu", "tanh", "sine", "gelu", ...; "identity" for none), several
    group-relevant maps in a row joined by "+" in execution order (``"tanh+max_pool"``),
    :data:`MIXED` where the networks of a batch differ; None: unknown (a bare state_dict, a
    hand-made spec).
    """

    weight_shapes: tuple[tuple[int, ...], ...]
    bias_shapes: tuple[tuple[int, ...], ...]
    activations: tuple[str, ...] | None = None

    @property
    def tensor_fields(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """The fields that describe tensors (weight and bias shapes), without ``activations``."""
        return self.weight_shapes, self.bias_shapes

    @property
    def num_layers(self) -> int:
        return len(self.weight_shapes)

    @property
    def neurons(self) -> tuple[int, ...]:
        """(n_0, ..., n_L): the neuron count of every neuron layer."""
        return (self.weight_shapes[0][1],) + tuple(s[0] for s in self.weight_shapes)

    def validate(self, where: str = "WeightSpaceSpec") -> "WeightSpaceSpec":
        """Check that the layers chain; raise ValueError naming the layer otherwise."""
        if not self.weight_shapes or len(self.weight_shapes) != len(self.bias_shapes):
            raise ValueError(f"{where}: needs one bias shape per weight shape and at least one layer, got "
                             f"{len(self.weight_shapes)} weights and {len(self.bias_shapes)} biases")
        for l, (w, b) in enumerate(zip(self.weight_shapes, self.bias_shapes)):
            if len(w) < 2 or min(w) < 1:
                raise ValueError(f"{where}: weight {l} has shape {w}, expected (n_out, n_in, *kernel) of positive sizes")
            if tuple(b) != (w[0],):
                raise ValueError(f"{where}: bias {l} has shape {b}, expected ({w[0]},) to match weight {l} {w}")
            if l and w[1] != self.weight_shapes[l - 1][0]:
                raise ValueError(f"{where}: weight {l} takes {w[1]} inputs but weight {l - 1} gives "
                                 f"{self.weight_shapes[l - 1][0]} outputs")
        acts = self.activations
        if acts is not None and (isinstance(acts, str) or len(acts) != self.num_layers - 1
                                 or not all(isinstance(a, str) for a in acts)):
            raise ValueError(f"{where}: activations must name one map per hidden neuron layer "
                             f"({self.num_layers - 1} for {self.num_layers} layers), got {acts!r}")
        return self


class WeightSpace(NamedTuple):
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    activations: tuple[str, ...] | None = None

    @property
    def tensor_fields(self) -> tuple[tuple[Tensor, ...], ...]:
        """The fields that hold tensors (weights, biases), without ``activations``."""
        return self.weights, self.biases

    @property
    def spec(self) -> WeightSpaceSpec:
        return WeightSpaceSpec(tuple(tuple(w.shape[2:]) for w in self.weights),
                               tuple(tuple(b.shape[2:]) for b in self.biases), self.activations)

    @property
    def batch_size(self) -> int:
        return self.weights[0].size(0)

    @property
    def num_channels(self) -> int:
        return self.weights[0].size(1)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "WeightSpace":
        """Apply ``fn`` to every tensor."""
        return self._replace(weights=tuple(fn(w) for w in self.weights), biases=tuple(fn(b) for b in self.biases))

    def zip_map(self, other: "WeightSpace", fn: Callable[[Tensor, Tensor], Tensor]) -> "WeightSpace":
        """``fn`` of matching tensors; the networks are the same, so either known record is kept."""
        return WeightSpace(tuple(fn(a, b) for a, b in zip(self.weights, other.weights)),
                           tuple(fn(a, b) for a, b in zip(self.biases, other.biases)),
                           merge_activations([self.activations, other.activations], ignore_unknown=True))

    def to(self, *args, **kwargs) -> "WeightSpace":
        return self.map(lambda t: t.to(*args, **kwargs))

    def __add__(self, other: "WeightSpace") -> "WeightSpace":  # elementwise, not tuple concatenation
        return self.zip_map(other, torch.add)

    def __sub__(self, other: "WeightSpace") -> "WeightSpace":
        return self.zip_map(other, torch.sub)

    def __mul__(self, other: "WeightSpace | float") -> "WeightSpace":
        if isinstance(other, WeightSpace):
            return self.zip_map(other, torch.mul)
        return self.map(lambda t: t * other)


def merge_activations(records: Sequence[tuple[str, ...] | None],
                      ignore_unknown: bool = False) -> tuple[str, ...] | None:
    """One activation record for spaces put together: per hidden layer the common name, or
    :data:`MIXED` where they differ. An unknown (None) record makes the result unknown, since
    that network may differ from the others; ``ignore_unknown`` (the same networks, e.g. a
    space and its edit) skips unknown records instead."""
    known = [r for r in records if r is not None]
    if not known or (len(known) < len(records) and not ignore_unknown):
        return None
    return tuple(names[0] if len(set(names)) == 1 else MIXED for names in zip(*known))


def concat(spaces: Sequence[WeightSpace], dim: int) -> WeightSpace:
    """Concatenate weight spaces of one spec along ``dim`` (0: batch, 1: channels of the same networks)."""
    return WeightSpace(tuple(torch.cat(ws, dim) for ws in zip(*(s.weights for s in spaces))),
                       tuple(torch.cat(bs, dim) for bs in zip(*(s.biases for s in spaces))),
                       merge_activations([s.activations for s in spaces], ignore_unknown=dim != 0))


def check_spec(space, spec, where: str) -> None:
    """Raise ValueError naming ``where`` and the first mismatching tensor when ``space``
    (a WeightSpace or AttentionWeightSpace) does not have the layer shapes ``spec``, or
    when both record activations and they differ (the model's group may depend on them)."""
    got = space.spec
    if got.tensor_fields != spec.tensor_fields:
        for field, want_shapes, got_shapes in zip(space._fields, spec.tensor_fields, got.tensor_fields):
            if len(want_shapes) != len(got_shapes):
                raise ValueError(f"{where}: built for {len(want_shapes)} {field}, got {len(got_shapes)}")
            for l, (w, g) in enumerate(zip(want_shapes, got_shapes)):
                if tuple(w) != tuple(g):
                    raise ValueError(f"{where}: {field}[{l}] has shape {tuple(g)}, the model was built for {tuple(w)}")
        raise ValueError(f"{where}: weight space spec {got} differs from the model's {spec}")
    want, have = getattr(spec, "activations", None), getattr(got, "activations", None)
    if want is not None and have is not None and tuple(want) != tuple(have):
        raise ValueError(f"{where}: the networks' hidden activations {tuple(have)} differ from {tuple(want)}, "
                         "which the model was built for")
