"""Hugging Face ``transformers`` models: the example inputs torch.export runs
them on, and loading a model directory (config.json and safetensors weights)
offline. ``transformers`` is imported only to load a directory; a model
object is recognised without importing it."""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import ConversionError, UnsupportedModuleError

#: tokens of the example sequences: long enough that a causal mask is not trivial
EXAMPLE_TOKENS = 8
EXAMPLE_BATCH = 2


def is_hf_model(module: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(module, transformers.PreTrainedModel)


def example_inputs(model: nn.Module) -> dict[str, object]:
    """Keyword inputs for ``torch.export``: [2, T] token ids (and token types
    where the model takes them) or [2, C, H, W] images, by the model's
    ``main_input_name``; no attention mask and no cache."""
    config, name = model.config, model.main_input_name
    label = type(model).__name__
    for setting in ("sliding_window", "attention_chunk_size"):
        if getattr(config, setting, None):
            # the example's short sequences would not show the window: refuse rather than encode plain attention
            raise UnsupportedModuleError(f"{label}: {setting}={getattr(config, setting)} (local attention) is not "
                                         "supported")
    params = inspect.signature(model.forward).parameters
    if name == "input_ids":
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        tokens = min(EXAMPLE_TOKENS, limit or EXAMPLE_TOKENS)
        inputs: dict[str, object] = {
            "input_ids": torch.arange(EXAMPLE_BATCH * tokens).reshape(EXAMPLE_BATCH, tokens) % config.vocab_size}
        if "token_type_ids" in params and getattr(config, "type_vocab_size", 0):
            inputs["token_type_ids"] = torch.zeros(EXAMPLE_BATCH, tokens, dtype=torch.long)
    elif name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else tuple(config.image_size)
        hw = (size, size) if isinstance(size, int) else size
        inputs = {"pixel_values": torch.zeros(EXAMPLE_BATCH, config.num_channels, *hw, dtype=_dtype(model))}
    else:
        raise UnsupportedModuleError(f"{label}: models whose main input is {name!r} are not supported "
                                     "(token ids or images)")
    if "use_cache" in params:
        inputs["use_cache"] = False
    return inputs


def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_model_dir(path: Path) -> nn.Module:
    """The model saved in ``path`` by ``save_pretrained``: its class from
    config.json's ``architectures``, its weights from model.safetensors (or
    sharded safetensors); read offline, no remote code, no pickles."""
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.iterdir())[:8]
        raise ConversionError(f"{path}: a Hugging Face model directory without safetensors weights (found {found}); "
                              "only safetensors weights are read")
    try:
        import transformers
    except ImportError:
        raise ConversionError(f"{path}: reading a Hugging Face model directory needs transformers "
                              "(pip install 'graphnfn[hf]')") from None
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        names = getattr(config, "architectures", None) or []
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None:
            raise ConversionError(f"config.json names architectures {names}, which transformers "
                                  f"{transformers.__version__} does not define")
        model = cls.from_pretrained(path, local_files_only=True, use_safetensors=True, trust_remote_code=False)
    except ConversionError as err:
        raise ConversionError(f"{path}: {err}") from None
    except Exception as err:  # transformers raises OSError/ValueError/KeyError... for broken directories
        line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise ConversionError(f"{path}: cannot load the Hugging Face model: {line}") from None
    return model.eval()
