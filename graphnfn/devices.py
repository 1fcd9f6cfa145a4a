"""Which torch device a ``device`` option names."""
from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cuda..."`` without CUDA is a ValueError
    naming the option, not a crash deep inside the first kernel."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    return torch.device(device)
