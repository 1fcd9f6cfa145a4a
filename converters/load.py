"""Reading checkpoints safely: ``.pt``/``.pth``/``.ckpt``/``.bin`` through
torch's weights-only unpickler (a pickle that would run code is refused before
anything runs) and ``.safetensors`` (no code at all). Every error names the file."""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import stat
import warnings
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .errors import CheckpointNotFoundError, ConversionError, UnsafeCheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
#: Keys under which training scripts commonly nest the state_dict, tried in this
#: order (the raw weights before their EMA copy); ``load_checkpoint(path, key=...)``
#: picks another entry.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params",
               "ema", "model_ema", "state_dict_ema", "ema_state_dict")
_MAX_DEPTH = 4


def natural_key(name: str) -> list:
    """Sort key that orders 'layers.2' before 'layers.10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _entries(obj: Mapping) -> dict:
    return {k: type(v).__name__ for k, v in list(obj.items())[:10]}


def _holds_tensors(obj: object, depth: int = 0) -> bool:
    """obj is a mapping with tensors in it, directly or under one of NESTED_KEYS."""
    return isinstance(obj, Mapping) and depth < _MAX_DEPTH and (
        any(isinstance(v, Tensor) for v in obj.values())
        or any(_holds_tensors(obj.get(k), depth + 1) for k in NESTED_KEYS))


def _checked(obj: Mapping, where: str) -> Mapping[str, Tensor]:
    """obj itself as a state_dict: string keys, tensor values, nothing else."""
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise ConversionError(f"{where}: key {bad_keys[0]!r} (of type {type(bad_keys[0]).__name__}) is not a parameter name")
    bad = {k: type(v).__name__ for k, v in obj.items() if not isinstance(v, Tensor)}
    if bad:
        hint = (" (a quantized model's state_dict? only floating-point weights convert)"
                if any("_packed_params" in k for k in bad) else "")
        shown = dict(list(bad.items())[:5])
        raise ConversionError(f"{where}: {len(bad)} entr{'y is not a tensor' if len(bad) == 1 else 'ies are not tensors'}: {shown}{hint}; "
                              "a state_dict maps parameter names to tensors only")
    return obj


def _find(obj: object, where: str, depth: int = 0) -> Mapping[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state_dict (a mapping of parameter names to tensors)")
    if depth < _MAX_DEPTH:
        for key in NESTED_KEYS:
            if _holds_tensors(obj.get(key), depth + 1):
                return _find(obj[key], f"{where}[{key!r}]", depth + 1)
    if any(isinstance(v, Tensor) for v in obj.values()):
        return _checked(obj, where)
    raise ConversionError(f"{where}: no state_dict found (a mapping of names to tensors, possibly under one of "
                          f"{NESTED_KEYS}); top-level entries: {_entries(obj)}")


def unwrap_state_dict(obj: object, source: str, key: str | None = None) -> Mapping[str, Tensor]:
    """The state_dict in a loaded checkpoint: the mapping itself or one nested
    under a usual key (``state_dict``, ``model``... see :data:`NESTED_KEYS`), or
    under ``key`` when given. Non-tensor entries in it are an error naming them."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = _entries(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ConversionError(f"{source}: has no entry {key!r}; top-level entries: {found}")
        return _find(obj[key], f"{source}[{key!r}]", 1)
    return _find(obj, source)


def _first_line(err: BaseException) -> str:
    """The informative line of an error message (torch wraps the reason in boilerplate)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue", "Check the documentation"))]
    line = (keep or lines or [type(err).__name__])[0]
    return line.split(". ")[0] if len(line) > 200 else line  # drop torch's advice after the reason


def _allowed_globals() -> set[str]:
    try:  # private, hence guarded: what torch.load(weights_only=True) accepts
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:
        return set()


def _pickle_globals(path: Path) -> list[str]:
    """The names a plain (non-zip) pickle file would import that the weights-only
    unpickler refuses, read opcode by opcode with pickletools: nothing is
    unpickled, nothing is run."""
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle, or damaged after the part read: report what was seen
        pass
    allowed = _allowed_globals()
    return list(dict.fromkeys(n for n in names if n not in allowed))


def _refuse_code(path: Path, names: list[str]) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: refused, nothing was run: unpickling it would import or call code ({', '.join(names[:4])}). "
        "A checkpoint with a whole pickled nn.Module also lands here: if you trust the file, load the "
        "module yourself and pass it to to_graph."
    )


def _check_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist") from None
    except (OSError, ValueError) as err:
        raise ConversionError(f"checkpoint {str(path)!r} cannot be opened: {getattr(err, 'strerror', None) or err}") from None
    if stat.S_ISDIR(mode):
        raise ConversionError(f"checkpoint {str(path)!r} is a directory: pass the .pt/.safetensors file in it "
                              "(a Hugging Face model directory has a config.json)")
    if not stat.S_ISREG(mode):
        raise ConversionError(f"checkpoint {str(path)!r} is not a regular file")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty (0 bytes)")


def load_checkpoint(path: str | os.PathLike, key: str | None = None) -> Mapping[str, Tensor]:
    """The state_dict stored in ``path`` (.pt/.pth/.ckpt/.bin or .safetensors), on the CPU.

    ``~`` is expanded. The state_dict may be the whole file or nested under one
    of :data:`NESTED_KEYS` (tried in order); ``key`` picks a top-level entry
    instead (e.g. ``"ema"`` when a file holds both ``model`` and ``ema``).
    Keys are returned as stored (``module.``/``model.`` prefixes are kept)."""
    path = Path(path).expanduser()
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ConversionError(f"{path}: not a valid safetensors file (truncated or corrupt?): {_first_line(err)}") from None
        # safetensors files do not keep the key order: restore layer order by natural sort
        return unwrap_state_dict({k: tensors[k] for k in sorted(tensors, key=natural_key)}, str(path), key)
    if suffix not in TORCH_SUFFIXES:
        raise ConversionError(f"{path}: unknown checkpoint suffix {suffix!r}; expected .safetensors or one of {TORCH_SUFFIXES}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols etc.: the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        names = ([] if is_zip else _pickle_globals(path)) or ([found.group(1)] if found else [])
        if names:
            raise _refuse_code(path, names) from None
        what = "" if is_zip else " (neither torch.save's zip archive nor a plain pickle torch.load reads safely)"
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint{what}; truncated or corrupt? "
                              f"{_first_line(err)}") from None
    except OSError as err:
        raise ConversionError(f"{path}: cannot be read: {err.strerror or _first_line(err)}") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/UnicodeDecodeError/... for damaged archives
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint (truncated or corrupt?): {_first_line(err)}") from None
    return unwrap_state_dict(obj, str(path), key)
