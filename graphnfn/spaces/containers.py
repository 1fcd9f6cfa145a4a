"""Helpers shared by every weight-space container (WeightSpace, AttentionWeightSpace): a
container is a NamedTuple whose ``tensor_fields`` are tuples of tensors [B, C, *shape] (a
WeightSpace also records its networks' activations), and its spec is the parallel NamedTuple
of shapes."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention_space import AttentionSpec, AttentionWeightSpace
from .weight_space import WeightSpace, WeightSpaceSpec

Spec = WeightSpaceSpec | AttentionSpec
Space = WeightSpace | AttentionWeightSpace


def validated(spec: Spec, where: str) -> Spec:
    """``spec`` as its own type, validated; TypeError naming ``where`` for anything else."""
    if isinstance(spec, AttentionSpec):
        return spec.validate(where)
    if isinstance(spec, tuple) and len(spec) in (2, 3):  # (weight shapes, bias shapes[, activations])
        return WeightSpaceSpec(*spec).validate(where)
    raise TypeError(f"{where}: spec must be a WeightSpaceSpec (ws.spec) or an AttentionSpec, got {type(spec).__name__}")


def shapes(spec: Spec) -> list[tuple[int, ...]]:
    """Every tensor's shape (without batch and channel), fields in order."""
    return [tuple(s) for field in spec.tensor_fields for s in field]


def tensors(space: Space) -> list[Tensor]:
    return [t for field in space.tensor_fields for t in field]


def rebuild(spec: Spec, flat: list[Tensor]) -> Space:
    """The container of ``spec``'s type holding ``flat`` (tensors in :func:`tensors` order),
    with ``spec``'s activations."""
    it = iter(flat)
    fields = [tuple(next(it) for _ in field) for field in spec.tensor_fields]
    return AttentionWeightSpace(*fields) if isinstance(spec, AttentionSpec) else WeightSpace(*fields, spec.activations)


def num_entries(spec: Spec) -> int:
    """Number of scalars per channel of a space of ``spec``."""
    return sum(math.prod(s) for s in shapes(spec))


def flatten(space: Space) -> Tensor:
    """[B, C * num_entries]: every tensor flattened, channels outermost per tensor."""
    return torch.cat([t.flatten(1) for t in tensors(space)], dim=1)


def unflatten(spec: Spec, x: Tensor, channels: int) -> Space:
    """Inverse of :func:`flatten` for a ``channels``-channel space of ``spec``."""
    sizes = [channels * math.prod(s) for s in shapes(spec)]
    return rebuild(spec, [part.reshape(x.shape[0], channels, *s)
                          for part, s in zip(x.split(sizes, dim=1), shapes(spec))])


def randn_space(spec: Spec, batch: int, channels: int = 1, scale: float = 1.0, **factory) -> Space:
    """A random space of ``spec``: entries N(0, scale^2); ``factory`` goes to torch.randn
    (dtype, device, generator)."""
    return rebuild(spec, [scale * torch.randn(batch, channels, *s, **factory) for s in shapes(spec)])
