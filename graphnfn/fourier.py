"""Gaussian Fourier features of scalars (Tancik et al., 2020), shared by the graph encoders
(:mod:`graphnfn.features`) and the parameter-sharing input encoding
(:mod:`graphnfn.paramshare.encoding`). A module of its own so that paramshare does not
import the graph stack."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: the frequency seeds of weights and kernel values (edges) and of biases (nodes), the same in
#: the graph encoders, the parameter-sharing input encoding and both families' statistics
WEIGHT_SEED, BIAS_SEED = 1, 0


class FourierFeatures(nn.Module):
    """Gaussian Fourier features of scalars.

    s [*, C] -> [*, C * (1 + 2F)]: each scalar next to sin(2 pi b_k s) and
    cos(2 pi b_k s) for F fixed frequencies b_k ~ N(0, sigma^2) (drawn from ``seed``).
    ``odd=True`` drops the cosines: [*, C * (1 + F)], every feature an odd function of s
    (what sign-flip equivariance needs). ``n_freq=0`` passes the scalars through.
    Channel c's features are contiguous: output index c * expansion + k.
    """

    def __init__(self, n_freq: int = 16, sigma: float = 3.0, seed: int = 0, odd: bool = False,
                 persistent: bool = True):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.odd = odd
        # persistent=False keeps the frequencies (a function of the seed) out of state_dict
        self.register_buffer("freq", torch.randn(n_freq, generator=gen) * sigma * 2 * math.pi, persistent=persistent)

    @property
    def expansion(self) -> int:
        return 1 + (1 if self.odd else 2) * self.freq.numel()

    def forward(self, s: Tensor) -> Tensor:
        return torch.cat(self.terms(s), -1).flatten(-2)

    def terms(self, s: Tensor) -> list[Tensor]:
        """The features by kind, unconcatenated: [s [*, C, 1], sin [*, C, F], cos [*, C, F]]
        (no cos with ``odd``); ``forward`` is their concatenation along the last dim, flattened."""
        angles = s.unsqueeze(-1) * self.freq.to(s.dtype)
        return [s.unsqueeze(-1), angles.sin()] + ([] if self.odd else [angles.cos()])
