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
    """Layer shapes without batch and channel dims: what layer builders take."""

    weight_shapes: tuple[tuple[int, ...], ...]
    bias_shapes: tuple[tuple[int, ...], ...]

    @property
    def num_layers(self) -> int:
        return len(self.weight_shapes)


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
