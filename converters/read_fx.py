"""Reading a module by its torch.fx trace: fx nodes -> operations of a program.

Each fx node becomes an operation on the values it reads, so skip connections
(``x + f(x)``), concatenations (``torch.cat``), several inputs, reshapes
between a patch embedding and its tokens, positional embeddings and class
tokens wire as a DAG. :class:`FxReader` walks the nodes as
``torch.fx.Interpreter`` does, one method per node kind (``placeholder``,
``get_attr``, ``call_function``, ``call_method``, ``call_module``,
``output``); calls dispatch through the tables :data:`CALL_FUNCTION` and
:data:`CALL_METHOD`, keyed by the function or method name. Submodules that fx
keeps whole (torch.nn layers, attention modules) are read by the function the
caller passes in (:func:`converters.read_modules.read_module`). A node that
cannot be wired raises :class:`UnsupportedModuleError` naming the fx node and
the user's source line that made it.
"""
from __future__ import annotations

import inspect
import operator
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from graphnfn.graph import Activation
from graphnfn.modules import Sine

from . import read_attention
from .activations import FUNCTION_ACT_PARAM, FUNCTION_ACTS, function_activation
from .errors import UnsupportedModuleError
from .program import Act, Add, Cat, Flatten, Input, Mean, Param, Pool, Positions, Program, SelectToken, ToTokens, join
from .read_layers import adaptive_positions, is_leaf, plain, pool_size


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # is_leaf: a user subclass of a layer that keeps its forward is that layer, not code to trace through
        return isinstance(m, Sine) or is_leaf(m) or read_attention.is_attention_module(m) \
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


#: arithmetic and comparisons, wired nowhere when they only combine sizes (``h // p == n``)
SIZE_ARITHMETIC = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.add,
                   operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod}
_MASK_ARGS = ("attn_mask", "key_padding_mask", "src_mask", "mask", "src_key_padding_mask")
ReadModule = Callable[[Program, nn.Module, str, int], int]


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


def trace_into(prog: Program, module: nn.Module, name: str, x: int, read_module: ReadModule) -> int:
    """Emit the traced ``forward`` of ``module`` with its first argument bound
    to value ``x``; at the top (``name == ''``) its other tensor arguments
    become further inputs. The submodules fx keeps whole are emitted by
    ``read_module(prog, submodule, path, value)``. Returns the value of its output."""
    label = name or type(module).__name__
    try:
        graph = _Tracer().trace(module, concrete_args=_forward_defaults(module))
    except Exception as err:  # fx raises many types for untraceable Python
        raise UnsupportedModuleError(
            f"{label} ({type(module).__name__}) is not a Sequential and torch.fx cannot trace it: {err}") from err
    return FxReader(prog, module, name, read_module).run(graph, x)


class FxReader:
    """Walks the fx nodes of one traced module, keeping what each stands for
    (``env``: a value id, a parameter, a shape, a tuple, a constant)."""

    def __init__(self, prog: Program, module: nn.Module, name: str, read_module: ReadModule):
        self.prog, self.module, self.name, self.read_module = prog, module, name, read_module
        self.label = name or type(module).__name__
        self.env: dict[fx.Node, object] = {}
        self.x: int | None = None  # the value the first placeholder stands for, until it is read
        self.checks: set[fx.Node] = set()  # fx's checks that an argument traced as None is None
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

    def first(self, node: fx.Node):
        return self.lookup(node.args[0]) if node.args else None

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

    # -- the walk: one method per node kind, as torch.fx.Interpreter -----------------------
    def run(self, graph: fx.Graph, x: int) -> int:
        self.x = x
        for node in graph.nodes:
            if node.op == "output":
                return self.output(node)
            if node not in self.checks:
                self.env[node] = getattr(self, node.op)(node)
        raise UnsupportedModuleError(f"{self.label}: the traced graph has no output")

    def placeholder(self, node: fx.Node):
        if self.x is not None:
            x, self.x = self.x, None
            self.inputs.add(x)
            return x
        if node.args == (None,):
            # an argument traced as None (see _forward_defaults): forward saw None itself, so the
            # placeholder's only users are the checks fx adds that it is None
            self.checks.update(node.users)
            return None
        if not node.users:
            return None
        if self.name:
            raise self.fail(node, "a submodule with several tensor inputs is only supported at the top level")
        v = self.prog.emit(Input(args=(), name=f"input:{node.name}"))
        self.inputs.add(v)
        return v

    def get_attr(self, node: fx.Node):
        tensor = operator.attrgetter(node.target)(self.module)
        return _ParamRef(join(self.name, node.target), tensor.detach()) if isinstance(tensor, Tensor) else tensor

    def call_function(self, node: fx.Node):
        if node.target in SIZE_ARITHMETIC and any(self.lookup(a) is SHAPE for a in node.args) \
                and all(self.lookup(a) is SHAPE or not isinstance(a, fx.Node) for a in node.args):
            return SHAPE
        return self.dispatch(node, CALL_FUNCTION.get(node.target))

    def call_method(self, node: fx.Node):
        return self.dispatch(node, CALL_METHOD.get(node.target))

    def dispatch(self, node: fx.Node, handler: Callable[[FxReader, fx.Node], object] | None):
        if handler is None:
            raise self.fail(node, "unsupported operation")
        return handler(self, node)

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
            return _Tuple((read_attention.mha(self.prog, sub, path, q, k, v, causal), _Unwired("attention weights")))
        if plain(sub, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            for a in list(node.args[1:3]) + [node.kwargs.get(n) for n in _MASK_ARGS]:
                self.runtime_mask(node, a)
            read = read_attention.encoder_layer if isinstance(sub, nn.TransformerEncoderLayer) else read_attention.encoder
            return read(self.prog, sub, path, self.value(node, node.args[0]), causal)
        if len(node.args) != 1 or node.kwargs:
            raise self.fail(node, f"module {path!r} is called with several arguments; only one tensor input is supported")
        return self.read_module(self.prog, sub, path, self.value(node, node.args[0]))

    def output(self, node: fx.Node) -> int:
        if isinstance(self.lookup(node.args[0]), _Scaled):
            raise UnsupportedModuleError(f"{self.label}: a trailing constant factor is not supported")
        return self.value(node, node.args[0])

    # -- call handlers (CALL_FUNCTION, CALL_METHOD) --------------------------------------
    def shape_read(self, node: fx.Node) -> _Shape:
        """``x.size()``, ``x.dim()``, ``x.shape``: used for reshapes, never wired."""
        return SHAPE

    def size_check(self, node: fx.Node) -> None:
        """``torch._assert`` on sizes (torchvision's ViT): nothing to wire."""
        return None

    def passthrough(self, node: fx.Node) -> int:
        """Dropout (the identity in eval) and ``contiguous``."""
        return self.value(node, node.args[0])

    def broadcast(self, node: fx.Node):
        """``expand``/``unsqueeze`` of a parameter or of positions: the parameter or positions themselves."""
        first = self.first(node)
        if isinstance(first, _ParamRef) or (isinstance(first, int) and first in self.aranges):
            return first
        raise self.fail(node, "unsupported operation")

    def reshape(self, node: fx.Node):
        """``flatten``/``view``/``reshape``/``squeeze``: to [batch, features], or a feature map
        flattened for its transpose to tokens; reshaped positions are still the positions."""
        first = self.first(node)
        if isinstance(first, int) and first in self.aranges:
            return first
        kind = _flatten_kind(node)
        if kind is None:
            raise self.fail(node, "only reshapes to [batch, features] (and flatten(2) or a reshape to "
                                  "[batch, channels, positions] of a feature map) are supported")
        channels = _dims(node, 1)[1] if kind == 2 and node.target not in ("flatten", torch.flatten) else None
        if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool)):
            raise self.fail(node, "a reshape to [batch, channels, positions] needs the channel count as a number")
        return self.emit(node, Flatten, self.value(node, node.args[0]), start_dim=kind, channels=channels)

    def transpose(self, node: fx.Node) -> int:
        if not _is_tokens_transpose(node):
            raise self.fail(node, "only the transpose [B, C, L] -> [B, L, C] of a feature map to tokens is supported")
        return self.emit(node, ToTokens, self.value(node, node.args[0]))

    def pool(self, node: fx.Node) -> int:
        kind, adaptive = FUNCTION_POOLS[node.target]
        size = _arg(node, 1, "output_size" if adaptive else "kernel_size", None)
        two_d = node.target.__name__.endswith("2d")
        if kind == "max" and _arg(node, 2 if adaptive else 6, "return_indices", False):
            raise self.fail(node, "pooling with return_indices=True returns a tuple, not a feature map")
        positions = adaptive_positions(size, two_d, self.describe(node)) if adaptive else None
        fields = dict(size=-positions, positions=positions) if adaptive else dict(size=pool_size(size, two_d))
        return self.emit(node, Pool, self.value(node, node.args[0]), kind=kind, **fields)

    def mean(self, node: fx.Node) -> int:
        dims = _arg(node, 1, "dim", None)
        if _arg(node, 2, "keepdim", False) or dims is None:
            raise self.fail(node, "only a mean over given dims without keepdim is supported")
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        return self.emit(node, Mean, self.value(node, node.args[0]), dims=dims)

    def add(self, node: fx.Node) -> int:
        if len(node.args) != 2 or node.kwargs:
            raise self.fail(node, "only the sum of two tensors is supported")
        return self.emit(node, Add, self.operand(node, node.args[0]), self.operand(node, node.args[1]))

    def cat(self, node: fx.Node) -> int:
        parts = [self.operand(node, a) for a in node.args[0]]
        return self.emit(node, Cat, *parts, dim=_arg(node, 1, "dim", 0))

    def mul(self, node: fx.Node) -> _Scaled:
        """``c * x`` or ``x * c`` of a constant c, waiting for its sin (SIREN)."""
        if len(node.args) != 2:
            raise self.fail(node, "unsupported operation")
        a, b = node.args
        tensor, factor = (a, b) if isinstance(self.lookup(a), int) and isinstance(a, fx.Node) else (b, a)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            raise self.fail(node, "only multiplication by a constant (in front of sin) is supported")
        return _Scaled(self.value(node, tensor), float(factor))

    def arange(self, node: fx.Node) -> int:
        out = self.emit(node, Positions)
        self.aranges.add(out)
        return out

    def activation(self, node: fx.Node) -> int:
        first = self.first(node)
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

    def getitem(self, node: fx.Node):
        """``a[index]`` of a tuple (a module's outputs), a shape, a parameter
        (slices from the start: ``pos_embed[:, :T]``) or a token sequence (``x[:, k]``)."""
        first, index = self.first(node), node.args[1]
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


Handler = Callable[[FxReader, fx.Node], object]
FUNCTION_POOLS = {
    F.max_pool1d: ("max", False), F.max_pool2d: ("max", False),
    F.avg_pool1d: ("avg", False), F.avg_pool2d: ("avg", False),
    F.adaptive_max_pool1d: ("max", True), F.adaptive_max_pool2d: ("max", True),
    F.adaptive_avg_pool1d: ("avg", True), F.adaptive_avg_pool2d: ("avg", True),
}
#: call_function nodes by target
CALL_FUNCTION: dict[object, Handler] = {
    getattr: FxReader.shape_read,
    torch._assert: FxReader.size_check,
    operator.getitem: FxReader.getitem,
    **{fn: FxReader.activation for fn in FUNCTION_ACTS if callable(fn)},
    **dict.fromkeys((F.dropout, F.dropout1d, F.dropout2d), FxReader.passthrough),
    torch.unsqueeze: FxReader.broadcast,
    **dict.fromkeys((torch.flatten, torch.reshape, torch.squeeze), FxReader.reshape),
    **dict.fromkeys((torch.transpose, torch.permute), FxReader.transpose),
    **dict.fromkeys(FUNCTION_POOLS, FxReader.pool),
    torch.mean: FxReader.mean,
    **dict.fromkeys((operator.add, operator.iadd, torch.add), FxReader.add),
    **dict.fromkeys((torch.cat, torch.concat, torch.concatenate), FxReader.cat),
    **dict.fromkeys((operator.mul, operator.imul, torch.mul), FxReader.mul),
    torch.arange: FxReader.arange,
}
#: call_method nodes by method name
CALL_METHOD: dict[str, Handler] = {
    "size": FxReader.shape_read, "dim": FxReader.shape_read,
    **{name: FxReader.activation for name in FUNCTION_ACTS if isinstance(name, str)},
    "contiguous": FxReader.passthrough,
    **dict.fromkeys(("expand", "expand_as", "unsqueeze"), FxReader.broadcast),
    **dict.fromkeys(("flatten", "view", "reshape", "squeeze"), FxReader.reshape),
    **dict.fromkeys(("transpose", "permute"), FxReader.transpose),
    "mean": FxReader.mean,
    **dict.fromkeys(("add", "add_"), FxReader.add),
    "mul": FxReader.mul,
}
