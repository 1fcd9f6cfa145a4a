"""Invariant pooling of weight-space features: NFN's NP/HNP pools and Monomial-NFN's pool.

In the canonical layout (:mod:`.symmetry`) averaging a tensor over all its permuted axes is
the general permutation-invariant linear map (one orbit per feature), so the pool is the
concatenation of those averages: NP keeps one vector per tensor, HNP also keeps the input
and output neuron indices (they are features there).

Under the monomial groups an entry with a character (a hidden neuron index) must first be
made invariant to its scaling: positive scalings multiply all features of an entry by one
positive number, so the entry's feature vector divided by its L2 norm is invariant; sign
flips multiply it by +-1, so its absolute values are. Entries whose neurons are all fixed
(the last bias; everything when there is no hidden layer) pass unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .symmetry import HNP, NP, SCALE, SIGN, Group, Layout
from ..spaces import WeightSpace, WeightSpaceSpec, check_spec


class InvariantPool(nn.Module):
    """Pool a ``channels``-channel weight space into a ``group``-invariant vector.

    Shapes: WeightSpace -> [B, num_features] (see :attr:`num_features`).
    """

    def __init__(self, spec: WeightSpaceSpec, channels: int, group: Group):
        super().__init__()
        self.layout = Layout(spec, group)
        self.channels = channels
        self.num_features = sum(channels * slot.features for slot in self.layout.slots)

    def forward(self, ws: WeightSpace) -> Tensor:
        check_spec(ws, self.layout.spec, type(self).__name__)
        pooled = []
        for slot, x in zip(self.layout.slots, self.layout.fold(ws)):
            if slot.axes:
                x = self._scale_free(x).mean(dim=tuple(range(2, x.dim())))
            pooled.append(x)
        return torch.cat(pooled, dim=1)

    def _scale_free(self, x: Tensor) -> Tensor:
        if self.layout.group.scaling == "scale":
            # x / |x| exactly (no eps in the ratio): eps only guards all-zero entries
            return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        if self.layout.group.scaling == "sign":
            return x.abs()
        return x


class NPPool(InvariantPool):
    """NFN's NP pool: the mean of every tensor (per feature). [B, sum_l C (K_l + 1)]."""

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__(spec, channels, NP)


class HNPPool(InvariantPool):
    """NFN's HNP pool: means over hidden neurons, input/output indices kept."""

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__(spec, channels, HNP)


class MonomialPool(InvariantPool):
    """Monomial-NFN pool: scale-free (L2-normalised, ``"scale"``) or sign-free (absolute,
    ``"sign"``) entries averaged over hidden neurons."""

    def __init__(self, spec: WeightSpaceSpec, channels: int, scaling: str = "scale"):
        if scaling not in ("scale", "sign"):
            raise ValueError(f"MonomialPool: scaling must be 'scale' or 'sign', got {scaling!r}")
        super().__init__(spec, channels, SCALE if scaling == "scale" else SIGN)
