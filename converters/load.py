"""Reading checkpoints safely: ``.pt``/``.pth`` through torch's weights-only
unpickler (a pickle that would run code is refused before anything runs) and
``.safetensors`` (no code at all)."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .errors import ConversionError, UnsafeCheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
#: Keys under which training scripts commonly nest the state_dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")


def natural_key(name: str) -> list:
    """Sort key that orders 'layers.2' before 'layers.10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: object, source: str) -> Mapping[str, Tensor]:
    """The state_dict in a loaded checkpoint: the mapping itself or one nested
    under a usual key (``state_dict``, ``model``...)."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
        found = {k: type(v).__name__ for k, v in list(obj.items())[:10]}
        raise ConversionError(f"{source}: no state_dict found (a mapping of names to tensors, possibly under one of {NESTED_KEYS}); top-level entries: {found}")
    raise ConversionError(f"{source}: holds a {type(obj).__name__}, not a state_dict")


def load_checkpoint(path: str | os.PathLike) -> Mapping[str, Tensor]:
    """The state_dict stored in ``path`` (.pt/.pth/.ckpt/.bin or .safetensors), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
            # safetensors files do not keep the key order: restore layer order by natural sort
            return unwrap_state_dict({k: tensors[k] for k in sorted(tensors, key=natural_key)}, str(path))
        except ConversionError:
            raise
        except Exception as err:  # safetensors raises its own error types
            raise ConversionError(f"{path}: not a valid safetensors file (truncated or corrupt?): {err}") from err
    if suffix not in TORCH_SUFFIXES:
        raise ConversionError(f"{path}: unknown checkpoint suffix {suffix!r}; expected .safetensors or one of {TORCH_SUFFIXES}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "GLOBAL" in message or "global" in message:
            first = next((ln.strip() for ln in message.splitlines() if "GLOBAL" in ln), message.splitlines()[0])
            raise UnsafeCheckpointError(
                f"{path}: refused, nothing was run: unpickling it would import or call code ({first}). "
                "A checkpoint with a whole pickled nn.Module also lands here: if you trust the file, load the "
                "module yourself and pass it to to_graph."
            ) from None
        raise ConversionError(f"{path}: cannot be unpickled (truncated or corrupt?): {message.splitlines()[0]}") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/... for damaged archives
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint (truncated or corrupt?): {err}") from err
    return unwrap_state_dict(obj, str(path))
