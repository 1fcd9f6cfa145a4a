"""Reading a network into a :class:`~converters.program.Program`, which
:mod:`converters.wire_program` wires into a graph.

A Sequential (nested at any depth) is read child by child; leaf layers
(:mod:`converters.read_layers`) and attention layers
(:mod:`converters.read_attention`) become operations; any other module is
traced with ``torch.fx`` (:mod:`converters.read_fx`), which reads the
submodules it calls back through :func:`read_module`. A bare state_dict is
read as an MLP. Anything else is an :class:`UnsupportedModuleError` naming the
module path or the traced node and its source line.
"""
from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin

from graphnfn.graph import Activation

from . import read_attention
from .errors import ConversionError, UnsupportedModuleError
from .program import Act, Input, Layer, Program, join
from .hf import example_inputs, is_hf_model
from .read_export import export_program
from .read_fx import trace_into
from .read_layers import is_leaf, leaf_op, plain


def read_module(prog: Program, module: nn.Module, name: str, x: int) -> int:
    """Emit ``module`` applied to value ``x`` (``name``: its path); returns its output value."""
    if plain(module, nn.Sequential):  # a subclass with its own forward (a residual wrapper) is traced
        # _modules, not named_children: a module used twice appears twice, as in state_dict()
        for child, sub in module._modules.items():
            if sub is not None:
                x = read_module(prog, sub, join(name, child), x)
        return x
    if is_leaf(module):
        op = leaf_op(module, name, x)
        return x if op is None else prog.emit(op)
    if plain(module, nn.MultiheadAttention):
        return read_attention.mha(prog, module, name, x, x, x)
    if plain(module, nn.TransformerEncoderLayer):
        return read_attention.encoder_layer(prog, module, name, x)
    if plain(module, nn.TransformerEncoder):
        return read_attention.encoder(prog, module, name, x)
    if read_attention.is_attention_module(module):
        return read_attention.handwritten(prog, module, name, x)
    if type(module).__module__.startswith("torch.nn"):
        raise UnsupportedModuleError(f"{name or type(module).__name__}: unsupported module type {type(module).__name__}")
    return trace_into(prog, module, name, x, read_module)


def _refuse_run_time_changes(module: nn.Module) -> None:
    """Forward hooks may replace what a module computes (old-style weight_norm and
    spectral_norm are pre-hooks) and torch.fx does not run them: refuse, never guess.
    A lazy module not run yet has no weights to convert."""
    for path, m in module.named_modules():
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
            raise UnsupportedModuleError(f"{path or type(module).__name__}: lazy module with uninitialized "
                                         "parameters; run the model on one input first")
        hooks = [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
        if hooks:
            names = sorted({getattr(h, "__qualname__", type(h).__name__) for h in hooks})
            raise UnsupportedModuleError(f"{path or type(module).__name__}: has forward hooks {names}, which may "
                                         "change what it computes; remove them (handle.remove()) before converting")


def module_program(module: nn.Module) -> Program:
    """The program of a whole network. A module reads one input (a traced one
    also reads its other ``forward`` arguments); an ``nn.MultiheadAttention``
    with separate q/k/v weights reads query, key and value (a packed one is
    self-attention on one input); a Hugging Face model reads its token ids
    (and token types) or images through torch.export."""
    _refuse_run_time_changes(module)
    if is_hf_model(module):  # transformers 5 has no fx tracer: read the model's torch.export graph
        return export_program(module, example_inputs(module))
    prog = Program()
    if plain(module, nn.MultiheadAttention) and not module._qkv_same_embed_dim:
        q, k, v = (prog.emit(Input(args=(), name=f"input:{role}")) for role in ("query", "key", "value"))
        prog.output = read_attention.mha(prog, module, "", q, k, v)
        return prog
    prog.output = read_module(prog, module, "", prog.emit(Input(args=(), name="input")))
    return prog


#: Parameter names of nn.LSTM / nn.GRU / nn.RNN layers (weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0, ...).
_RECURRENT = re.compile(r"(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?")


def state_dict_program(state_dict: Mapping[str, Tensor]) -> Program:
    """An MLP from its state_dict alone: Linear layers in key order, each a
    ``<prefix>.weight`` [out, in] and an optional ``<prefix>.bias`` [out]. The
    activations are not in a state_dict, so hidden and output neurons get
    :attr:`Activation.UNKNOWN`."""
    layers: dict[str, dict[str, tuple[str, Tensor]]] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ConversionError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        prefix, _, role = key.rpartition(".")
        if _RECURRENT.fullmatch(role):
            raise UnsupportedModuleError(
                f"state_dict entry {key!r} looks like an LSTM/GRU/RNN state_dict: recurrent layers are not supported")
        if role not in ("weight", "bias") or value.dim() != (2 if role == "weight" else 1):
            raise UnsupportedModuleError(
                f"state_dict entry {key!r} (shape {tuple(value.shape)}) is not a Linear weight [out, in] or bias [out]; "
                "only MLP state_dicts convert without their module: pass the nn.Module for other networks"
            )
        layers.setdefault(prefix, {})[role] = (key, value.detach())
    prog = Program()
    x = prog.emit(Input(args=(), name="input"))
    for prefix, tensors in layers.items():
        if "weight" not in tensors:
            raise ConversionError(f"state_dict has {prefix + '.bias'!r} but no {prefix + '.weight'!r}")
        x = prog.emit(Layer(args=(x,), name=prefix, kind="linear", tensors=tensors))
        x = prog.emit(Act(args=(x,), name=prefix, kind=Activation.UNKNOWN))
    prog.output = x
    return prog
