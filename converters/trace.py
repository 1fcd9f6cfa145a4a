"""The torch.fx path: a traced ``forward`` -> operations of a program.

Each fx node becomes an operation on the values it reads, so skip connections
(``x + f(x)``), concatenations (``torch.cat``), several inputs, reshapes
between a patch embedding and its tokens, positional embeddings and class
tokens wire as a DAG. Submodules that fx keeps whole (torch.nn layers,
attention modules) are emitted by :func:`converters.ops.emit_module`. A node
that cannot be wired raises :class:`UnsupportedModuleError` naming the fx node
and the user's source line that made it.
"""
from __future__ import annotations

import inspect
import operator
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from graphnfn.graph import Activation
from graphnfn.modules import Sine

from . import attention
from .activations import FUNCTION_ACT_PARAM, FUNCTION_ACTS, function_activation
from .errors import UnsupportedModuleError
from .ir import Act, Add, Cat, Flatten, Input, Mean, Param, Pool, Positions, Program, SelectToken, ToTokens, join
from .layers import adaptive_positions, is_leaf, plain, pool_size
from .ops import emit_module


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # is_leaf: a user subclass of a layer that keeps its forward is that layer, not code to trace through
        return isinstance(m, Sine) or is_leaf(m) or attention.is_attention_module(m) \
            or super().is_leaf_module(m, qualname)


# what fx values stand for, beside value ids (int) and Python constants
class _Shape:
    """A size, dtype or device read from a tensor: used for reshapes, never wired."""


SHAPE = _Shape()


@dataclass
class _ParamRef:
    key: str
    tensor: Tensor


@dataclass
class _Scaled:
    """``factor * value``, waiting for the ``sin`` it feeds (SIREN)."""

    value: int
    factor: float


@dataclass
class _Tuple:
    items: tuple


@dataclass
class _Unwired:
    what: str


_FN_SKIP = {F.dropout, F.dropout1d, F.dropout2d, "contiguous"}
_FN_FLATTEN = {torch.flatten, "flatten", "view", "reshape", torch.reshape, "squeeze", torch.squeeze}
_FN_TRANSPOSE = {"transpose", torch.transpose, "permute", torch.permute}
_FN_POOLS = {
    F.max_pool1d: ("max", False), F.max_pool2d: ("max", False),
    F.avg_pool1d: ("avg", False), F.avg_pool2d: ("avg", False),
    F.adaptive_max_pool1d: ("max", True), F.adaptive_max_pool2d: ("max", True),
    F.adaptive_avg_pool1d: ("avg", True), F.adaptive_avg_pool2d: ("avg", True),
}
_FN_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_FN_MUL = {operator.mul, operator.imul, torch.mul, "mul"}
_FN_CAT = {torch.cat, torch.concat, torch.concatenate}
_FN_BROADCAST = {"expand", "expand_as", "unsqueeze", torch.unsqueeze}  # of parameters and positions
_FN_RESHAPE = _FN_BROADCAST | _FN_FLATTEN
#: arithmetic and comparisons, wired nowhere when they only combine sizes (``h // p == n``)
_SHAPE_OPS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.add,
              operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod}
_MASK_ARGS = ("attn_mask", "key_padding_mask", "src_mask", "mask", "src_key_padding_mask")


def _where(node: fx.Node) -> str:
    """The user's source line that made ``node``: the innermost frame outside
    torch (the stack runs from the traced module's forward down to the call)."""
    lines = [ln.strip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip()]
    frames = [(frame, code) for frame, code in zip(lines, lines[1:])
              if frame.startswith("File ") and f"{os.sep}torch{os.sep}" not in frame]
    return f" at {frames[-1][0]}: {frames[-1][1]}" if frames else ""


def _arg(node: fx.Node, i: int, key: str, default):
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def _dims(node: fx.Node, start: int) -> tuple:
    """The int arguments from ``start`` on (``view(B, -1)`` or ``view((B, -1))``)."""
    rest = node.args[start:]
    return tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else tuple(rest)


def _flatten_kind(node: fx.Node) -> int | None:
    """1: a reshape to [batch, features]; 2: ``flatten(2)`` of a feature map or a
    reshape to [batch, channels, positions]; None: neither."""
    target = node.target
    if target in ("squeeze", torch.squeeze):
        return 1
    if target in ("flatten", torch.flatten):
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return start if start in (1, 2) and end == -1 else None
    return {2: 1, 3: 2}.get(len(_dims(node, 1)))


def _is_tokens_transpose(node: fx.Node) -> bool:
    dims = _dims(node, 1)
    if node.target in ("permute", torch.permute):
        return dims == (0, 2, 1)
    return set(dims) in ({1, 2}, {-1, -2}, {1, -1}, {2, -2})


def _forward_defaults(module: nn.Module) -> dict[str, None] | None:
    """Arguments of ``forward`` defaulting to None (optional masks, targets):
    traced as None, so ``if mask is not None`` does not stop the trace."""
    params = inspect.signature(module.forward).parameters
    return {n: None for n, p in list(params.items())[1:] if p.default is None} or None


def trace_into(prog: Program, module: nn.Module, name: str, x: int) -> int:
    """Emit the traced ``forward`` of ``module`` with its first argument bound
    to value ``x``; at the top (``name == ''``) its other tensor arguments
    become further inputs. Returns the value of its output."""
    label = name or type(module).__name__
    try:
        graph = _Tracer().trace(module, concrete_args=_forward_defaults(module))
    except Exception as err:  # fx raises many types for untraceable Python
        raise UnsupportedModuleError(
            f"{label} ({type(module).__name__}) is not a Sequential and torch.fx cannot trace it: {err}") from err
    return _FxEmitter(prog, module, name).run(graph, x)


class _FxEmitter:
    """Walks the fx nodes of one traced module, keeping what each stands for
    (``env``: a value id, a parameter, a shape, a tuple, a constant)."""

    def __init__(self, prog: Program, module: nn.Module, name: str):
        self.prog, self.module, self.name = prog, module, name
        self.label = name or type(module).__name__
        self.env: dict[fx.Node, object] = {}
        self.inputs: set[int] = set()  # values of forward arguments (masks may be passed on to attention)
        self.aranges: set[int] = set()  # values of torch.arange positions

    # -- helpers --------------------------------------------------------------------
    def describe(self, node: fx.Node) -> str:
        target = getattr(node.target, "__name__", node.target)
        return f"{self.label}: fx node '{node.name}' ({node.op} {target}){_where(node)}"

    def fail(self, node: fx.Node, why: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(f"{self.describe(node)}: {why}")

    def lookup(self, a):
        return self.env.get(a) if isinstance(a, fx.Node) else a

    def value(self, node: fx.Node, a) -> int:
        """The value id of argument ``a``, which must be a wired tensor."""
        v = self.lookup(a)
        if isinstance(v, int) and not isinstance(v, bool) and isinstance(a, fx.Node):
            return v
        if isinstance(v, _Scaled):
            raise self.fail(node, "a constant factor is only supported in front of sin (SIREN)")
        if isinstance(v, _ParamRef):
            raise self.fail(node, f"parameter {v.key!r} is used outside a supported layer")
        if isinstance(v, _Unwired):
            raise self.fail(node, f"the {v.what} are not wired into the graph")
        raise self.fail(node, f"expects a tensor flowing through the network, got {v!r}")

    def operand(self, node: fx.Node, a) -> int:
        """A value, or a parameter used directly (emitted as a Param op)."""
        v = self.lookup(a)
        if isinstance(v, _ParamRef):
            return self.prog.emit(Param(args=(), name=v.key, label=self.describe(node), tensor=(v.key, v.tensor)))
        return self.value(node, a)

    def emit(self, node: fx.Node, cls, *args: int, **fields) -> int:
        return self.prog.emit(cls(args=args, name=join(self.name, node.name), label=self.describe(node), **fields))

    def runtime_mask(self, node: fx.Node, a) -> None:
        v = self.lookup(a)
        if a is not None and not (isinstance(v, int) and v in self.inputs):
            raise self.fail(node, "attention masks must be forward arguments (runtime data) or is_causal=True; "
                                  "a mask computed inside forward is not supported")

    # -- the walk ---------------------------------------------------------------------
    def run(self, graph: fx.Graph, x: int) -> int:
        placeholders = 0
        for node in graph.nodes:
            if node.op == "placeholder":
                self.placeholder(node, x if placeholders == 0 else None)
                placeholders += 1
            elif node.op == "output":
                if isinstance(self.lookup(node.args[0]), _Scaled):
                    raise UnsupportedModuleError(f"{self.label}: a trailing constant factor is not supported")
                return self.value(node, node.args[0])
            elif node.op == "get_attr":
                tensor = operator.attrgetter(node.target)(self.module)
                key = join(self.name, node.target)
                self.env[node] = _ParamRef(key, tensor.detach()) if isinstance(tensor, Tensor) else tensor
            elif node.op == "call_module":
                self.env[node] = self.call_module(node)
            else:
                self.env[node] = self.call(node)
        raise UnsupportedModuleError(f"{self.label}: the traced graph has no output")

    def placeholder(self, node: fx.Node, x: int | None) -> None:
        used = any(u.target is not torch.fx._symbolic_trace._assert_is_none for u in node.users)
        if x is not None:
            self.env[node] = x
        elif used and self.name:
            raise self.fail(node, "a submodule with several tensor inputs is only supported at the top level")
        elif used:
            self.env[node] = self.prog.emit(Input(args=(), name=f"input:{node.name}"))
        if isinstance(self.env.get(node), int):
            self.inputs.add(self.env[node])

    def call(self, node: fx.Node):
        """A call_function / call_method node."""
        target, args = node.target, node.args
        first = self.lookup(args[0]) if args else None
        if target is torch.fx._symbolic_trace._assert_is_none:
            return None
        if target in ("size", "dim") or target is getattr:
            return SHAPE
        if target is torch._assert:
            return None  # a check of sizes (torchvision's ViT); nothing to wire
        if target in _SHAPE_OPS and any(self.lookup(a) is SHAPE for a in args) \
                and all(self.lookup(a) is SHAPE or not isinstance(a, fx.Node) for a in args):
            return SHAPE
        if target is operator.getitem:
            return self.getitem(node, first, args[1])
        if target in FUNCTION_ACTS:
            return self.activation(node, first)
        if target in _FN_SKIP:
            return self.value(node, args[0])
        if target in _FN_BROADCAST and isinstance(first, _ParamRef):
            return first  # a parameter broadcast over the batch: the parameter itself
        if target in _FN_RESHAPE and isinstance(first, int) and first in self.aranges:
            return first  # reshaped positions are still the positions
        if target in _FN_FLATTEN:
            kind = _flatten_kind(node)
            if kind is None:
                raise self.fail(node, "only reshapes to [batch, features] (and flatten(2) or a reshape to "
                                      "[batch, channels, positions] of a feature map) are supported")
            channels = _dims(node, 1)[1] if kind == 2 and target not in ("flatten", torch.flatten) else None
            if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool)):
                raise self.fail(node, "a reshape to [batch, channels, positions] needs the channel count as a number")
            return self.emit(node, Flatten, self.value(node, args[0]), start_dim=kind, channels=channels)
        if target in _FN_TRANSPOSE:
            if not _is_tokens_transpose(node):
                raise self.fail(node, "only the transpose [B, C, L] -> [B, L, C] of a feature map to tokens is supported")
            return self.emit(node, ToTokens, self.value(node, args[0]))
        if target in _FN_POOLS:
            kind, adaptive = _FN_POOLS[target]
            size = _arg(node, 1, "output_size" if adaptive else "kernel_size", None)
            two_d = target.__name__.endswith("2d")
            if kind == "max" and _arg(node, 2 if adaptive else 6, "return_indices", False):
                raise self.fail(node, "pooling with return_indices=True returns a tuple, not a feature map")
            positions = adaptive_positions(size, two_d, self.describe(node)) if adaptive else None
            fields = dict(size=-positions, positions=positions) if adaptive else dict(size=pool_size(size, two_d))
            return self.emit(node, Pool, self.value(node, args[0]), kind=kind, **fields)
        if target in ("mean", torch.mean):
            dims = _arg(node, 1, "dim", None)
            if _arg(node, 2, "keepdim", False) or dims is None:
                raise self.fail(node, "only a mean over given dims without keepdim is supported")
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            return self.emit(node, Mean, self.value(node, args[0]), dims=dims)
        if target in _FN_ADD:
            if len(args) != 2 or node.kwargs:
                raise self.fail(node, "only the sum of two tensors is supported")
            return self.emit(node, Add, self.operand(node, args[0]), self.operand(node, args[1]))
        if target in _FN_CAT:
            parts = [self.operand(node, a) for a in args[0]]
            return self.emit(node, Cat, *parts, dim=_arg(node, 1, "dim", 0))
        if target in _FN_MUL and len(args) == 2:
            return self.scaled(node)
        if target is torch.arange:
            out = self.emit(node, Positions)
            self.aranges.add(out)
            return out
        raise self.fail(node, "unsupported operation")

    def activation(self, node: fx.Node, first) -> int:
        scaled = first if isinstance(first, _Scaled) else None
        pname = FUNCTION_ACT_PARAM.get(FUNCTION_ACTS[node.target], ("",))[0]
        kind, param = function_activation(node.target, _arg(node, 1, pname, None) if pname else None)
        if kind in (Activation.SOFTMAX, Activation.LOG_SOFTMAX) and _arg(node, 1, "dim", None) not in (1, -1):
            raise self.fail(node, "softmax must be over the neurons (dim=1 or -1)")
        if scaled is not None and kind is not Activation.SINE:
            raise self.fail(node, "a constant factor is only supported in front of sin (SIREN)")
        if kind is Activation.SINE:
            param = scaled.factor if scaled else 1.0
        return self.emit(node, Act, scaled.value if scaled else self.value(node, node.args[0]), kind=kind, param=param)

    def scaled(self, node: fx.Node) -> _Scaled:
        """``c * x`` or ``x * c`` of a constant c, waiting for its sin (SIREN)."""
        a, b = node.args
        tensor, factor = (a, b) if isinstance(self.lookup(a), int) and isinstance(a, fx.Node) else (b, a)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            raise self.fail(node, "only multiplication by a constant (in front of sin) is supported")
        return _Scaled(self.value(node, tensor), float(factor))

    def getitem(self, node: fx.Node, first, index):
        """``a[index]`` of a tuple (a module's outputs), a shape, a parameter
        (slices from the start: ``pos_embed[:, :T]``) or a token sequence (``x[:, k]``)."""
        if isinstance(first, _Tuple):
            return first.items[index]
        if first is SHAPE:
            return SHAPE
        parts = index if isinstance(index, tuple) else (index,)
        whole = all(p is Ellipsis or (isinstance(p, slice) and p.start in (None, 0) and p.step is None) for p in parts)
        if isinstance(first, _ParamRef) and whole:
            return first
        if isinstance(first, int) and len(parts) >= 2 and parts[0] == slice(None) and isinstance(parts[1], int) \
                and all(p == slice(None) or p is Ellipsis for p in parts[2:]):
            return self.emit(node, SelectToken, self.value(node, node.args[0]), index=parts[1])
        raise self.fail(node, f"indexing with {index!r} is not supported (only x[:, k] of a token sequence)")

    def call_module(self, node: fx.Node):
        """A submodule fx kept whole: attention layers take their q/k/v and masks;
        any other module reads exactly one tensor."""
        sub = self.module.get_submodule(node.target)
        path = join(self.name, node.target)
        causal = bool(node.kwargs.get("is_causal", False))
        if plain(sub, nn.MultiheadAttention):
            q, k, v = (self.value(node, _arg(node, i, n, None)) for i, n in enumerate(("query", "key", "value")))
            for i, n in ((3, "key_padding_mask"), (5, "attn_mask")):
                self.runtime_mask(node, _arg(node, i, n, None))
            return _Tuple((attention.mha(self.prog, sub, path, q, k, v, causal), _Unwired("attention weights")))
        if plain(sub, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            for a in list(node.args[1:3]) + [node.kwargs.get(n) for n in _MASK_ARGS]:
                self.runtime_mask(node, a)
            emit = attention.encoder_layer if isinstance(sub, nn.TransformerEncoderLayer) else attention.encoder
            return emit(self.prog, sub, path, self.value(node, node.args[0]), causal)
        if len(node.args) != 1 or node.kwargs:
            raise self.fail(node, f"module {path!r} is called with several arguments; only one tensor input is supported")
        return emit_module(self.prog, sub, path, self.value(node, node.args[0]))
