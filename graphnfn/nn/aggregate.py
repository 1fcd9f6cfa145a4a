"""Neighbourhood reductions shared by the graph layers and the readout.

Sums go through ``Tensor.index_add`` (a 1-D index; its backward is one
``index_select``). :func:`scatter_max` and :func:`scatter_min` give the values of
``torch_geometric.utils.scatter(..., reduce="max" / "min")`` and the same gradient
(split evenly between tied extremes), with a backward of 1-D index ops instead of
autograd's ``scatter_reduce`` formula over an [E, F] index (see the benchmarks
docs for the speed). No host-device synchronisation in either direction.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _ScatterExtreme(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, num: int, reduce: str) -> Tensor:
        out = src.new_zeros(num, src.size(1))
        out.scatter_reduce_(0, index.view(-1, 1).expand_as(src), src, reduce, include_self=False)
        ctx.save_for_backward(src, index, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        src, index, out = ctx.saved_tensors
        hit = (src == out.index_select(0, index)).to(grad.dtype)  # [E, F]: the entries that are their row's extreme
        ties = torch.zeros_like(grad).index_add_(0, index, hit).clamp_(min=1)
        return hit * (grad / ties).index_select(0, index), None, None, None


def scatter_max(src: Tensor, index: Tensor, num: int) -> Tensor:
    """src [E, F], index [E] in [0, num) -> [num, F]: the maximum of the rows of ``src``
    sent to each index, 0 where none is."""
    return _ScatterExtreme.apply(src, index, num, "amax")


def scatter_min(src: Tensor, index: Tensor, num: int) -> Tensor:
    """src [E, F], index [E] in [0, num) -> [num, F]: the minimum of the rows sent to each index, 0 where none is."""
    return _ScatterExtreme.apply(src, index, num, "amin")


def scatter_sum(src: Tensor, index: Tensor, num: int) -> Tensor:
    """src [E, *F], index [E] -> [num, *F]: the sum of the rows sent to each index."""
    return src.new_zeros(num, *src.shape[1:]).index_add(0, index, src)
