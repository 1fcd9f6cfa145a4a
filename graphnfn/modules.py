"""Plain torch modules that graphnfn networks use and the converters recognise."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Sine(nn.Module):
    """``sin(w0 * x)``, the SIREN activation (Sitzmann et al., 2020)."""

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"
