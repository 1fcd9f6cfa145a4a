"""From a network to a flat list of operations the graph builder wires.

A Sequential (nested at any depth) is read child by child; any other module is
traced with ``torch.fx`` and must be a chain: every operation consumes the
output of the previous one. Parameter layers (Linear, Conv, BatchNorm) carry
their state_dict entries; activations, pooling and Flatten carry what they do.
Anything else is an :class:`UnsupportedModuleError` naming the module path or
the traced node and its source line.
"""
from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from graphnfn.graph import PADDING_MODES, Activation
from graphnfn.modules import Sine

from .errors import ConversionError, UnsupportedModuleError


@dataclass
class ParamLayer:
    """A layer with parameters. ``tensors`` maps a role (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``) to its
    (state_dict key, tensor); ``geometry`` holds conv stride/padding/dilation as
    (h, w) pairs and the padding mode."""

    kind: str  # "linear" | "conv" | "norm"
    name: str
    tensors: dict[str, tuple[str, Tensor]]
    geometry: dict[str, object] = field(default_factory=dict)

    @property
    def weight(self) -> Tensor | None:
        return self.tensors["weight"][1] if "weight" in self.tensors else None


@dataclass
class Act:
    kind: Activation
    param: float = 0.0
    name: str = ""


@dataclass
class Pool:
    """Pooling after the current layer. ``size``: window size (product of the
    kernel dims), -1 for adaptive pooling; ``positions``: spatial positions
    left afterwards where known (adaptive pooling), else None."""

    kind: str  # "max" | "avg"
    size: int
    positions: int | None = None
    name: str = ""


@dataclass
class Flatten:
    name: str = ""


Op = Union[ParamLayer, Act, Pool, Flatten]

_ACT_MODULES: dict[type, Callable[[nn.Module], tuple[Activation, float]]] = {
    nn.ReLU: lambda m: (Activation.RELU, 0.0),
    nn.LeakyReLU: lambda m: (Activation.LEAKY_RELU, float(m.negative_slope)),
    nn.GELU: lambda m: (Activation.GELU, float(m.approximate == "tanh")),
    nn.Tanh: lambda m: (Activation.TANH, 0.0),
    nn.Sigmoid: lambda m: (Activation.SIGMOID, 0.0),
    nn.SiLU: lambda m: (Activation.SILU, 0.0),
    nn.ELU: lambda m: (Activation.ELU, float(m.alpha)),
    nn.Softplus: lambda m: (Activation.SOFTPLUS, float(m.beta)),
    nn.Softmax: lambda m: (Activation.SOFTMAX, 0.0),
    nn.LogSoftmax: lambda m: (Activation.LOG_SOFTMAX, 0.0),
    Sine: lambda m: (Activation.SINE, float(m.w0)),
}
_SKIP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_POOL_MODULES = {
    nn.MaxPool1d: "max",
    nn.MaxPool2d: "max",
    nn.AvgPool1d: "avg",
    nn.AvgPool2d: "avg",
    nn.AdaptiveMaxPool1d: "max",
    nn.AdaptiveMaxPool2d: "max",
    nn.AdaptiveAvgPool1d: "avg",
    nn.AdaptiveAvgPool2d: "avg",
}
_LEAVES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
           *_ACT_MODULES, *_SKIP_MODULES, *_POOL_MODULES)


def _pair(v) -> tuple[int, int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return (1, v[0]) if len(v) == 1 else (int(v[0]), int(v[1]))


def _prod(v) -> int:
    out = 1
    for s in (v if isinstance(v, (tuple, list)) else (v,)):
        out *= int(s)
    return out


def _positions(output_size, two_d: bool) -> int | None:
    """Spatial positions left by adaptive pooling (None where a dim keeps its size)."""
    dims = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * (2 if two_d else 1)
    return None if any(d is None for d in dims) else _prod(dims)


def _tensors(module: nn.Module, name: str, roles: tuple[str, ...]) -> dict[str, tuple[str, Tensor]]:
    prefix = f"{name}." if name else ""
    own = module.state_dict(keep_vars=True)
    return {r: (prefix + r, own[r].detach()) for r in roles if own.get(r) is not None}


def _conv_geometry(m: nn.Module, name: str) -> dict[str, object]:
    if m.groups != 1:
        raise UnsupportedModuleError(f"{name or 'module'} ({m}): grouped convolutions (groups={m.groups}) are not supported")
    if m.padding_mode not in PADDING_MODES:
        raise UnsupportedModuleError(f"{name}: padding_mode {m.padding_mode!r} is not supported")
    padding = (-1, -1) if m.padding == "same" else (0, 0) if m.padding == "valid" else _pair(m.padding)
    return {"stride": _pair(m.stride), "padding": padding, "dilation": _pair(m.dilation),
            "padding_mode": PADDING_MODES.index(m.padding_mode)}


def module_ops(module: nn.Module, name: str = "") -> list[Op]:
    """The operations of ``module`` in execution order; ``name`` is its path."""
    label = name or type(module).__name__
    if isinstance(module, nn.Sequential):
        # _modules, not named_children: a module used twice appears twice, as in state_dict()
        return [op for child, sub in module._modules.items() if sub is not None
                for op in module_ops(sub, f"{name}.{child}" if name else child)]
    if isinstance(module, nn.Linear):
        return [ParamLayer("linear", name, _tensors(module, name, ("weight", "bias")))]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return [ParamLayer("conv", name, _tensors(module, name, ("weight", "bias")), _conv_geometry(module, name))]
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        roles = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        return [ParamLayer("norm", name, _tensors(module, name, roles), {"num_features": module.num_features})]
    for cls, read in _ACT_MODULES.items():
        if type(module) is cls:
            kind, param = read(module)
            if kind in (Activation.SOFTMAX, Activation.LOG_SOFTMAX) and module.dim not in (1, -1):
                raise UnsupportedModuleError(f"{label}: softmax over dim {module.dim} is not over neurons")
            return [Act(kind, param, name)]
    if isinstance(module, _SKIP_MODULES):
        return []
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedModuleError(f"{label}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return [Flatten(name)]
    for cls, kind in _POOL_MODULES.items():
        if type(module) is cls:
            if "Adaptive" in cls.__name__:
                return [Pool(kind, -1, _positions(module.output_size, cls.__name__.endswith("2d")), name)]
            k = module.kernel_size
            return [Pool(kind, _prod(k) ** (2 if cls.__name__.endswith("2d") and isinstance(k, int) else 1), None, name)]
    if isinstance(module, _LEAVES) or type(module).__module__.startswith("torch.nn"):
        raise UnsupportedModuleError(f"{label}: unsupported module type {type(module).__name__}")
    return _traced_ops(module, name)


# ---- torch.fx path for modules that are not Sequential -------------------------

class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Sine) or super().is_leaf_module(m, qualname)


_FN_ACTS: dict[object, Activation] = {
    F.relu: Activation.RELU, torch.relu: Activation.RELU, "relu": Activation.RELU,
    F.leaky_relu: Activation.LEAKY_RELU,
    F.gelu: Activation.GELU,
    torch.tanh: Activation.TANH, F.tanh: Activation.TANH, "tanh": Activation.TANH,
    torch.sigmoid: Activation.SIGMOID, F.sigmoid: Activation.SIGMOID, "sigmoid": Activation.SIGMOID,
    F.silu: Activation.SILU, F.elu: Activation.ELU, F.softplus: Activation.SOFTPLUS,
    torch.sin: Activation.SINE, "sin": Activation.SINE,
    F.softmax: Activation.SOFTMAX, torch.softmax: Activation.SOFTMAX, "softmax": Activation.SOFTMAX,
    F.log_softmax: Activation.LOG_SOFTMAX, torch.log_softmax: Activation.LOG_SOFTMAX,
    "log_softmax": Activation.LOG_SOFTMAX,
}
# default values of the functional activations' parameters
_FN_ACT_PARAM = {Activation.LEAKY_RELU: ("negative_slope", 0.01), Activation.ELU: ("alpha", 1.0),
                 Activation.SOFTPLUS: ("beta", 1.0)}
_FN_SKIP = {F.dropout, F.dropout1d, F.dropout2d, "contiguous"}
_FN_FLATTEN = {torch.flatten, "flatten", "view", "reshape", torch.reshape, "squeeze", torch.squeeze}
_FN_POOLS = {
    F.max_pool1d: ("max", False), F.max_pool2d: ("max", False),
    F.avg_pool1d: ("avg", False), F.avg_pool2d: ("avg", False),
    F.adaptive_max_pool1d: ("max", True), F.adaptive_max_pool2d: ("max", True),
    F.adaptive_avg_pool1d: ("avg", True), F.adaptive_avg_pool2d: ("avg", True),
}
# shape helpers: they read the running value but do not replace it
_SHAPE_HELPERS = {"size", "dim", getattr, operator.getitem}


def _where(node: fx.Node) -> str:
    """The user's source line that made ``node`` (the first frame outside torch)."""
    lines = [ln.strip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip()]
    for frame, code in zip(lines, lines[1:]):
        if frame.startswith("File ") and f"{os.sep}torch{os.sep}" not in frame:
            return f" at {frame}: {code}"
    return ""


def _arg(node: fx.Node, i: int, key: str, default):
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def _flatten_ok(node: fx.Node) -> bool:
    """flatten(x, 1), x.view(B, -1), x.reshape(-1, n), squeeze of pooled dims."""
    target = node.target
    if target in ("squeeze", torch.squeeze):
        return True
    if target in ("flatten", torch.flatten):
        return _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return len(shape) == 2


def _traced_ops(module: nn.Module, name: str) -> list[Op]:
    label = name or type(module).__name__
    try:
        graph = _Tracer().trace(module)
    except Exception as err:  # fx raises many types for untraceable Python
        raise UnsupportedModuleError(
            f"{label} ({type(module).__name__}) is not a Sequential and torch.fx cannot trace it: {err}"
        ) from err
    ops: list[Op] = []
    current: fx.Node | None = None
    scale: float | None = None  # a constant factor waiting for the sin it feeds (SIREN)

    def fail(node: fx.Node, why: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(f"{label}: fx node '{node.name}' ({node.op} {getattr(node.target, '__name__', node.target)}){_where(node)}: {why}")

    for node in graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                raise fail(node, "modules with several inputs are not supported")
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise fail(node, "the output is not the result of the last layer")
            continue
        if node.op in ("call_function", "call_method") and node.target in _SHAPE_HELPERS:
            continue
        target = node.target
        if node.op != "call_module" and target in (operator.mul, torch.mul, "mul") and len(node.args) == 2 \
                and current in node.args:
            factor = node.args[1] if node.args[0] is current else node.args[0]
            if scale is not None or not isinstance(factor, (int, float)):
                raise fail(node, "only multiplication by a constant (in front of sin) is supported")
            scale, current = float(factor), node
            continue
        if not node.args or node.args[0] is not current:
            raise fail(node, "only chains of layers are wired here (no residuals, concatenations or branches)")
        if scale is not None and _FN_ACTS.get(node.target) is not Activation.SINE:
            raise fail(node, "a constant factor is only supported in front of sin (SIREN)")
        if node.op == "call_module":
            ops += module_ops(module.get_submodule(target), f"{name}.{target}" if name else target)
        elif node.op == "get_attr":
            raise fail(node, "parameters used outside a supported layer are not supported")
        elif target in _FN_ACTS:
            kind = _FN_ACTS[target]
            if kind in (Activation.SOFTMAX, Activation.LOG_SOFTMAX) and _arg(node, 1, "dim", None) not in (1, -1):
                raise fail(node, "softmax must be over the neurons (dim=1 or -1)")
            pname, default = _FN_ACT_PARAM.get(kind, ("", 0.0))
            param = scale if kind is Activation.SINE else float(_arg(node, 1, pname, default)) if pname else 0.0
            ops.append(Act(kind, 1.0 if param is None else param, node.name))
            scale = None
        elif target in _FN_SKIP:
            pass
        elif target in _FN_FLATTEN:
            if not _flatten_ok(node):
                raise fail(node, "only reshapes to [batch, features] are supported")
            ops.append(Flatten(node.name))
        elif target in _FN_POOLS:
            kind, adaptive = _FN_POOLS[target]
            size = _arg(node, 1, "output_size" if adaptive else "kernel_size", None)
            two_d = target.__name__.endswith("2d")
            ops.append(Pool(kind, -1, _positions(size, two_d), node.name) if adaptive
                       else Pool(kind, _prod(size) ** (2 if two_d and isinstance(size, int) else 1), None, node.name))
        elif target in ("mean", torch.mean) and not _arg(node, 2, "keepdim", False):
            dims = _arg(node, 1, "dim", None)
            dims = {dims} if isinstance(dims, int) else set(dims or ())
            if not dims or not dims <= {2, 3, -1, -2}:
                raise fail(node, f"mean over dims {sorted(dims)} is not a spatial pooling")
            ops += [Pool("avg", -1, 1, node.name), Flatten(node.name)]
        else:
            raise fail(node, "unsupported operation")
        current = node
    if scale is not None:
        raise UnsupportedModuleError(f"{label}: a trailing constant factor is not supported")
    return ops


# ---- bare state_dicts ----------------------------------------------------------

def state_dict_ops(state_dict: Mapping[str, Tensor]) -> list[Op]:
    """An MLP from its state_dict alone: Linear layers in key order, each a
    ``<prefix>.weight`` [out, in] and an optional ``<prefix>.bias`` [out]. The
    activations are not in a state_dict, so hidden and output neurons get
    :attr:`Activation.UNKNOWN`."""
    layers: dict[str, dict[str, tuple[str, Tensor]]] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ConversionError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        prefix, _, role = key.rpartition(".")
        if role not in ("weight", "bias") or value.dim() != (2 if role == "weight" else 1):
            raise UnsupportedModuleError(
                f"state_dict entry {key!r} (shape {tuple(value.shape)}) is not a Linear weight [out, in] or bias [out]; "
                "only MLP state_dicts convert without their module: pass the nn.Module for other networks"
            )
        layers.setdefault(prefix, {})[role] = (key, value.detach())
    ops: list[Op] = []
    for prefix, tensors in layers.items():
        if "weight" not in tensors:
            raise ConversionError(f"state_dict has {prefix + '.bias'!r} but no {prefix + '.weight'!r}")
        ops += [ParamLayer("linear", prefix, tensors), Act(Activation.UNKNOWN, 0.0, prefix)]
    return ops
