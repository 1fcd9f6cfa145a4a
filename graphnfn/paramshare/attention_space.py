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

from typing import Callable, NamedTuple

from torch import Tensor


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
    def num_blocks(self) -> int:
        return len(self.query)

    @property
    def batch_size(self) -> int:
        return self.query[0].size(0)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "AttentionWeightSpace":
        """Apply ``fn`` to every tensor."""
        return AttentionWeightSpace(*(tuple(fn(t) for t in field) for field in self))

    def to(self, *args, **kwargs) -> "AttentionWeightSpace":
        return self.map(lambda t: t.to(*args, **kwargs))
