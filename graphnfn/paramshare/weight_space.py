"""Weight-space features as a plain tuple of tensors (the input of NFN-style layers).

For an L-layer MLP or CNN with C feature channels per weight:
    weights[l]  [B, C, n_out_l, n_in_l (, kernel dims)]
    biases[l]   [B, C, n_out_l]
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor


class WeightSpaceSpec(NamedTuple):
    """Layer shapes without batch and channel dims: what layer builders take.

    ``weight_shapes[l]`` is (n_{l+1}, n_l, *kernel) and ``bias_shapes[l]`` is (n_{l+1},):
    layer l maps neuron layer l to neuron layer l + 1, so the network has L + 1 neuron
    layers n_0 (inputs) ... n_L (outputs).
    """

    weight_shapes: tuple[tuple[int, ...], ...]
    bias_shapes: tuple[tuple[int, ...], ...]

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
        return self


class WeightSpace(NamedTuple):
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]

    @property
    def spec(self) -> WeightSpaceSpec:
        return WeightSpaceSpec(tuple(tuple(w.shape[2:]) for w in self.weights),
                               tuple(tuple(b.shape[2:]) for b in self.biases))

    @property
    def batch_size(self) -> int:
        return self.weights[0].size(0)

    @property
    def num_channels(self) -> int:
        return self.weights[0].size(1)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "WeightSpace":
        """Apply ``fn`` to every tensor."""
        return WeightSpace(tuple(fn(w) for w in self.weights), tuple(fn(b) for b in self.biases))

    def zip_map(self, other: "WeightSpace", fn: Callable[[Tensor, Tensor], Tensor]) -> "WeightSpace":
        return WeightSpace(tuple(fn(a, b) for a, b in zip(self.weights, other.weights)),
                           tuple(fn(a, b) for a, b in zip(self.biases, other.biases)))

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


def concat(spaces: Sequence[WeightSpace], dim: int) -> WeightSpace:
    """Concatenate weight spaces of one spec along ``dim`` (0: batch, 1: channels)."""
    return WeightSpace(tuple(torch.cat(ws, dim) for ws in zip(*(s.weights for s in spaces))),
                       tuple(torch.cat(bs, dim) for bs in zip(*(s.biases for s in spaces))))


def check_spec(space, spec, where: str) -> None:
    """Raise ValueError naming ``where`` and the first mismatching tensor when ``space``
    (a WeightSpace or AttentionWeightSpace) does not have the layer shapes ``spec``."""
    got = space.spec
    if got == spec:
        return
    for field, want_shapes, got_shapes in zip(space._fields, spec, got):
        if len(want_shapes) != len(got_shapes):
            raise ValueError(f"{where}: built for {len(want_shapes)} {field}, got {len(got_shapes)}")
        for l, (w, g) in enumerate(zip(want_shapes, got_shapes)):
            if tuple(w) != tuple(g):
                raise ValueError(f"{where}: {field}[{l}] has shape {tuple(g)}, the model was built for {tuple(w)}")
    raise ValueError(f"{where}: weight space spec {got} differs from the model's {spec}")
