"""Weight space of transformer encoder blocks (the Transformer-NFN input format).

Row-vector convention, as in Transformer-NFN: a block maps X [n, D] by
    head i:  softmax((X W_q[i]) (X W_k[i])^T / sqrt(d_k)) (X W_v[i]) W_o[i]
    MLP:     relu(X W_a + b_a) W_b + b_b
(residuals and LayerNorms are not part of this weight space). Per block, batch
first and with a channel dim C:
    query [B, C, h, D, d_k]   key [B, C, h, D, d_k]
    value [B, C, h, D, d_v]   out [B, C, h, d_v, D]
    mlp_in [B, C, D, D_a]     mlp_in_bias [B, C, D_a]
    mlp_out [B, C, D_a, D]    mlp_out_bias [B, C, D]
Each field is a tuple over blocks.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor


class BlockDims(NamedTuple):
    """Sizes of one encoder block: heads h, model width D, query/key width d_k,
    value width d_v and MLP hidden width D_a."""

    heads: int
    dim: int
    d_k: int
    d_v: int
    d_mlp: int


def _block_shapes(b: BlockDims) -> tuple[tuple[int, ...], ...]:
    """The eight per-block shapes in AttentionWeightSpace field order."""
    return ((b.heads, b.dim, b.d_k), (b.heads, b.dim, b.d_k), (b.heads, b.dim, b.d_v), (b.heads, b.d_v, b.dim),
            (b.dim, b.d_mlp), (b.d_mlp,), (b.d_mlp, b.dim), (b.dim,))


class AttentionSpec(NamedTuple):
    """Per-field tuples of per-block shapes without batch and channel dims, parallel to
    :class:`AttentionWeightSpace` (``spec.query[i]`` is the shape of ``ws.query[i][0, 0]``)."""

    query: tuple[tuple[int, ...], ...]
    key: tuple[tuple[int, ...], ...]
    value: tuple[tuple[int, ...], ...]
    out: tuple[tuple[int, ...], ...]
    mlp_in: tuple[tuple[int, ...], ...]
    mlp_in_bias: tuple[tuple[int, ...], ...]
    mlp_out: tuple[tuple[int, ...], ...]
    mlp_out_bias: tuple[tuple[int, ...], ...]

    @classmethod
    def from_dims(cls, blocks: Sequence[BlockDims | Sequence[int]]) -> "AttentionSpec":
        """The spec of blocks given as (heads, D, d_k, d_v, D_a)."""
        per_block = [_block_shapes(BlockDims(*b)) for b in blocks]
        return cls(*(tuple(shapes) for shapes in zip(*per_block))).validate()

    @property
    def tensor_fields(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """Every field (all describe tensors; the same interface as WeightSpaceSpec)."""
        return tuple(self)

    @property
    def num_blocks(self) -> int:
        return len(self.query)

    def block(self, i: int) -> BlockDims:
        h, dim, d_k = self.query[i]
        return BlockDims(h, dim, d_k, self.value[i][2], self.mlp_in[i][1])

    def validate(self, where: str = "AttentionSpec") -> "AttentionSpec":
        """Check that every block's shapes agree; raise ValueError naming the field otherwise."""
        if not self.query or len({len(f) for f in self}) != 1:
            raise ValueError(f"{where}: every field needs one shape per block and at least one block, "
                             f"got {[len(f) for f in self]}")
        for i in range(self.num_blocks):
            for field, got, shape in zip(self._fields, (f[i] for f in self), _block_shapes(self.block(i))):
                if tuple(got) != shape:
                    raise ValueError(f"{where}: {field}[{i}] has shape {tuple(got)}, expected {shape} from "
                                     f"query {self.query[i]}, value {self.value[i]} and mlp_in {self.mlp_in[i]}")
        return self


class AttentionWeightSpace(NamedTuple):
    query: tuple[Tensor, ...]
    key: tuple[Tensor, ...]
    value: tuple[Tensor, ...]
    out: tuple[Tensor, ...]
    mlp_in: tuple[Tensor, ...]
    mlp_in_bias: tuple[Tensor, ...]
    mlp_out: tuple[Tensor, ...]
    mlp_out_bias: tuple[Tensor, ...]

    @property
    def tensor_fields(self) -> tuple[tuple[Tensor, ...], ...]:
        """Every field (all hold tensors; the same interface as WeightSpace)."""
        return tuple(self)

    @property
    def num_blocks(self) -> int:
        return len(self.query)

    @property
    def batch_size(self) -> int:
        return self.query[0].size(0)

    @property
    def num_channels(self) -> int:
        return self.query[0].size(1)

    @property
    def spec(self) -> AttentionSpec:
        return AttentionSpec(*(tuple(tuple(t.shape[2:]) for t in field) for field in self))

    def map(self, fn: Callable[[Tensor], Tensor]) -> "AttentionWeightSpace":
        """Apply ``fn`` to every tensor."""
        return AttentionWeightSpace(*(tuple(fn(t) for t in field) for field in self))

    def zip_map(self, other: "AttentionWeightSpace", fn: Callable[[Tensor, Tensor], Tensor]) -> "AttentionWeightSpace":
        return AttentionWeightSpace(*(tuple(fn(a, b) for a, b in zip(fa, fb)) for fa, fb in zip(self, other)))

    def to(self, *args, **kwargs) -> "AttentionWeightSpace":
        return self.map(lambda t: t.to(*args, **kwargs))

    def __add__(self, other: "AttentionWeightSpace") -> "AttentionWeightSpace":  # elementwise
        return self.zip_map(other, torch.add)

    def __sub__(self, other: "AttentionWeightSpace") -> "AttentionWeightSpace":
        return self.zip_map(other, torch.sub)
