"""Per-entry operations on weight-space features: nonlinearities, channel maps, channel
layer norm. They act on every entry (weight, bias, kernel) alone, so they commute with
any permutation of neurons; channel maps and odd/positively homogeneous nonlinearities
also commute with sign flips/positive scalings, layer norm does not.

Kernel dims count as features: an entry of a CNN weight [B, C, n_out, n_in, *kernel] has
C * prod(kernel) features, as in NFN.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import Tensor, nn

from ..spaces import WeightSpace, WeightSpaceSpec


def to_entries(x: Tensor, kernel_dims: int) -> Tensor:
    """[B, C, *sym, *kernel] -> [B, *sym, C * prod(kernel)] (features last)."""
    sym = x.dim() - 2 - kernel_dims
    x = x.permute(0, *range(2, 2 + sym), 1, *range(2 + sym, x.dim()))
    return x.reshape(*x.shape[:1 + sym], -1)


def from_entries(y: Tensor, kernel: Sequence[int]) -> Tensor:
    """Inverse of :func:`to_entries`: [B, *sym, C * prod(kernel)] -> [B, C, *sym, *kernel]."""
    sym = y.dim() - 2
    y = y.reshape(*y.shape[:-1], -1, *kernel)
    return y.permute(0, 1 + sym, *range(1, 1 + sym), *range(2 + sym, y.dim()))


def tensor_kernels(spec: WeightSpaceSpec) -> list[tuple[int, ...]]:
    """Kernel shape of every tensor in WeightSpace order (weights, then biases)."""
    return [tuple(s[2:]) for s in spec.weight_shapes] + [()] * spec.num_layers


def per_entry(ws: WeightSpace, kernels: Sequence[tuple[int, ...]], fns: Sequence[Callable[[Tensor], Tensor]]) -> WeightSpace:
    """Apply ``fns[i]`` to the features-last entries of the i-th tensor (weights, then biases)."""
    tensors = [from_entries(fn(to_entries(t, len(k))), k) for t, k, fn in zip((*ws.weights, *ws.biases), kernels, fns)]
    return WeightSpace(tuple(tensors[:len(ws.weights)]), tuple(tensors[len(ws.weights):]))


class Activation(nn.Module):
    """A pointwise nonlinearity on every tensor of a weight space (any container with ``map``)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, ws):
        return ws.map(self.fn)


class ChannelMap(nn.Module):
    """Per-entry linear map of the features of every tensor, its own matrix per tensor.

    Shapes: weights [B, in_channels, n_out, n_in, *kernel] -> [B, out_channels, n_out, n_in, *kernel],
    biases [B, in_channels, n_out] -> [B, out_channels, n_out].
    """

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.kernels = tensor_kernels(spec)
        self.maps = nn.ModuleList(nn.Linear(in_channels * math.prod(k), out_channels * math.prod(k), bias=bias)
                                  for k in self.kernels)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        return per_entry(ws, self.kernels, self.maps)


class PointwiseMLP(nn.Module):
    """Per-entry two-layer MLP (features -> hidden -> features), one per tensor: the feed-forward
    sublayer of NFT. Shapes: any ``channels``-channel weight space -> the same shape."""

    def __init__(self, spec: WeightSpaceSpec, channels: int, hidden: int):
        super().__init__()
        self.kernels = tensor_kernels(spec)
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(channels * math.prod(k), hidden), nn.GELU(),
                                                nn.Linear(hidden, channels * math.prod(k))) for k in self.kernels)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        return per_entry(ws, self.kernels, self.mlps)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the features (channels x kernel) of every entry, with a learned affine
    map per tensor. Equivariant to neuron permutations (not to scalings)."""

    def __init__(self, spec: WeightSpaceSpec, channels: int, eps: float = 1e-5):
        super().__init__()
        self.kernels = tensor_kernels(spec)
        self.norms = nn.ModuleList(nn.LayerNorm(channels * math.prod(k), eps=eps) for k in self.kernels)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        return per_entry(ws, self.kernels, self.norms)

