"""The public entry points: any supported input -> NeuralGraph or weight-space tensors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, TypeVar, Union

from torch import Tensor, nn

from graphnfn.graph import NeuralGraph
from graphnfn.spaces import AttentionWeightSpace, WeightSpace

from .wire_program import build_graph
from .errors import ConversionError
from .hf import is_model_dir, load_model_dir
from .program import Program
from .load import load_checkpoint
from .read_modules import module_program, state_dict_program
from .threads import single_threaded
from .weight_spaces import attention_weight_space, chain_weight_space

Convertible = Union[nn.Module, Mapping[str, Tensor], str, os.PathLike]
T = TypeVar("T")


def _program(obj: Convertible) -> tuple[Program, list[str]]:
    if isinstance(obj, nn.Module):
        return module_program(obj), list(obj.state_dict().keys())
    if isinstance(obj, Mapping):
        return state_dict_program(obj), list(obj.keys())
    raise TypeError(f"cannot convert a {type(obj).__name__}: pass an nn.Module, a state_dict or a checkpoint path")


@single_threaded
def _converted(obj: Convertible, allow_nonfinite: bool, fn: Callable[[Program, NeuralGraph], T]) -> T:
    """``fn(program, graph)`` of obj (a path is loaded first and named in any conversion error)."""
    def run(o: Convertible) -> T:
        prog, keys = _program(o)
        return fn(prog, build_graph(prog, keys, allow_nonfinite=allow_nonfinite))

    if not isinstance(obj, (str, os.PathLike)):
        return run(obj)
    path = Path(obj).expanduser()
    source = load_model_dir(path) if is_model_dir(path) else load_checkpoint(path)
    try:
        return run(source)
    except ConversionError as err:
        raise type(err)(f"{os.fspath(obj)}: {err}") from err


def to_graph(obj: Convertible, allow_nonfinite: bool = False) -> NeuralGraph:
    """The neuron graph of a network.

    Args:
        obj: an ``nn.Module`` (Sequential at any depth, transformer layers,
            attention modules, anything torch.fx can trace: residuals,
            concatenations, several inputs; Hugging Face models through
            torch.export), a state_dict of an MLP, a path to a
            ``.pt``/``.pth``/``.safetensors`` checkpoint holding one, or a
            Hugging Face model directory (config.json and safetensors
            weights, read offline): the graph then folds back into the
            loaded model's state_dict.
        allow_nonfinite: accept NaN/Inf weights instead of raising.
    Returns:
        a :class:`graphnfn.NeuralGraph` that :func:`converters.from_graph` folds
        back into the same state_dict, bit for bit.
    """
    return _converted(obj, allow_nonfinite, lambda prog, g: g)


def to_weight_space(obj: Convertible, allow_nonfinite: bool = False) -> WeightSpace:
    """The network as a :class:`WeightSpace` with batch and channel dims of 1:
    weights [1, 1, n_out, n_in(, kernel dims)], biases [1, 1, n_out] (zeros for
    layers without bias), in the graph's dtype. Only chains of Linear/Conv
    layers (global pooling allowed) have this form."""
    return _converted(obj, allow_nonfinite, chain_weight_space)


def to_attention_weight_space(obj: Convertible, allow_nonfinite: bool = False) -> AttentionWeightSpace:
    """The transformer blocks of a network as an :class:`AttentionWeightSpace`
    (the Transformer-NFN input format), batch and channel dims of 1, per block:
    query/key [1, 1, h, D, d_k], value [1, 1, h, D, d_v], out [1, 1, h, d_v, D],
    mlp_in [1, 1, D, D_a], mlp_in_bias [1, 1, D_a], mlp_out [1, 1, D_a, D],
    mlp_out_bias [1, 1, D]. A block is an attention layer and the MLP (two
    Linear layers) after it. The format has no place for q/k/v/o biases,
    LayerNorms, embeddings or the head: use :func:`to_graph` for all of them."""
    return _converted(obj, allow_nonfinite, lambda prog, g: attention_weight_space(prog, g.x.dtype))
