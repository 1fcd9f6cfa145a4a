"""The two baselines of every weight-space paper: a statistics-feature model (Unterthiner
et al., "Predicting Neural Network Accuracy from Weights") and an MLP on the flattened weights.
Both take any container (WeightSpace or AttentionWeightSpace)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..spaces import Spec, flatten, num_entries, rebuild, shapes, tensors, unflatten
from ..statistics import QUANTILES, STATS_PER_TENSOR
from .elementwise import from_entries, to_entries


class StatFeatures(nn.Module):
    """Per tensor and channel: mean, variance and the 0/25/50/75/100 % quantiles of all its
    entries (kernels included). Invariant to any permutation of the entries of a tensor.

    Shapes: container with C channels and T tensors -> [B, T * C * 7].
    """

    def __init__(self, spec: Spec, channels: int):
        super().__init__()
        self.num_features = len(shapes(spec)) * channels * STATS_PER_TENSOR
        self.register_buffer("q", torch.tensor(QUANTILES), persistent=False)

    def forward(self, space) -> Tensor:
        feats = []
        for t in tensors(space):
            x = t.flatten(2)
            q = torch.quantile(x, self.q.to(x.dtype), dim=-1).permute(1, 2, 0)  # [B, C, 5]
            feats.append(torch.cat([x.mean(-1, keepdim=True), x.var(-1, correction=0, keepdim=True), q], -1).flatten(1))
        return torch.cat(feats, dim=1)


class StatEdit(nn.Module):
    """Equivariant readout of the statistics baseline: every scalar entry gets
    MLP([its C values, the network's statistics, a one-hot of its tensor]) -> d_out values,
    which commutes with any permutation of entries within a tensor.

    Shapes: C-channel container -> the same spec with ``d_out`` channels.
    """

    def __init__(self, spec: Spec, channels: int, d_out: int, hidden: int = 64):
        super().__init__()
        self.spec = spec
        self.stats = StatFeatures(spec, channels)
        self.num_tensors = len(shapes(spec))
        self.mlp = nn.Sequential(nn.Linear(channels + self.stats.num_features + self.num_tensors, hidden), nn.ReLU(),
                                 nn.Linear(hidden, d_out))

    def forward(self, space):
        stats = self.stats(space)
        out = []
        for i, t in enumerate(tensors(space)):
            x = to_entries(t, 0)  # [B, *dims, C]
            onehot = torch.zeros(self.num_tensors, dtype=x.dtype, device=x.device)
            onehot[i] = 1
            context = torch.cat([stats, onehot.expand(len(stats), -1)], dim=1)
            context = context.reshape(len(stats), *(1,) * (x.dim() - 2), -1).expand(*x.shape[:-1], -1)
            out.append(from_entries(self.mlp(torch.cat([x, context], dim=-1)), ()))
        return rebuild(self.spec, out)


class Flatten(nn.Module):
    """Container -> [B, C * num_entries]."""

    def forward(self, space) -> Tensor:
        return flatten(space)


class Unflatten(nn.Module):
    """[B, channels * num_entries] -> container of ``spec`` with ``channels`` channels."""

    def __init__(self, spec: Spec, channels: int):
        super().__init__()
        self.spec, self.channels = spec, channels
        self.num_features = channels * num_entries(spec)

    def forward(self, x: Tensor):
        return unflatten(self.spec, x, self.channels)
