"""Reading a module by torch.export: aten nodes -> operations of a program.

For modules torch.fx cannot trace (Hugging Face models: data-dependent
Python, mask builders, caches), ``torch.export.export`` runs the model on
example inputs and records every aten op with the module that made it
(``nn_module_stack``). :class:`ExportReader` walks those nodes one method per
node kind, as the fx path does; ``call_function`` nodes dispatch by aten op
through :data:`ATEN`. It emits the operations the fx path emits, so layers,
heads, norms and embeddings are encoded the same way. What a node stands for
(``env``):

* :class:`Wired`: a tensor of the forward pass held by graph nodes (a program
  value), with the role of each dim: ``b`` batch, ``t`` tokens, ``f``
  features, ``s`` spatial, ``''`` a broadcast dim of size 1, ``bt`` batch and
  tokens merged into rows;
* :class:`Const`: computed from constants alone (buffers, ``arange``,
  literals), so evaluated, never wired: attention masks, position ids and
  rotary cos/sin tables, at the example inputs' length;
* :class:`ParamRef`: a parameter, wired by the layer that reads it;
* :class:`Pending`: a Linear's output before its readers tell whether it is
  a layer of the stream or a q/k/v projection of attention;
* :class:`Heads`, :class:`Scores`, :class:`Probs`, :class:`Context`: attention
  from the per-head views of the projections (with rotary embeddings and
  grouped-query repeats) to the concatenated heads that the output projection
  reads, which emits one :class:`~converters.program.Attention`;
* :class:`RmsParts`: the steps of an RMSNorm written out
  (``w * (x * rsqrt(mean(x^2, -1) + eps))``).

A parameter-free module computing an activation in several ops (GPT-2's
``NewGELUActivation``) is read whole after checking it numerically. Anything
else is an :class:`UnsupportedModuleError` naming the module path, its class
and the aten op; a model is never approximated.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.export.graph_signature import InputKind

from graphnfn.graph import Activation

from .errors import UnsupportedModuleError
from .program import (Act, Add, Attention, Cat, Flatten, Input, Layer, Mean, Mul, Param, Positions, Program, Proj,
                      Rotary, SelectToken, ToTokens, join)
from .read_layers import conv_geometry

aten = torch.ops.aten


def export_program(module: nn.Module, example: dict[str, object]) -> Program:
    """The program of ``module`` as torch.export records it on the keyword
    inputs ``example`` (in eval mode; the module's modes are restored)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        exported = torch.export.export(module, (), example, strict=False)
    except Exception as err:  # export raises many types for code it cannot capture
        line = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise UnsupportedModuleError(f"{type(module).__name__}: torch.export cannot capture it: {line}") from err
    finally:
        for m, training in modes.items():
            m.train(training)
    return ExportReader(module, exported).run()


# ---- what nodes stand for -------------------------------------------------------------

Axes = tuple[str, ...]


@dataclass(frozen=True)
class Wired:
    value: int
    axes: Axes


@dataclass(frozen=True)
class Const:
    value: object


@dataclass(frozen=True)
class ParamRef:
    target: str
    tensor: Tensor
    keys: tuple[str, ...]  # its state_dict keys: several for tied weights


@dataclass(eq=False)
class Pending:
    src: Wired
    proj: Proj
    path: str  # the Linear's module path
    label: str
    axes: Axes
    wired: Wired | None = None  # once emitted as a layer


@dataclass(frozen=True, eq=False)
class Heads:
    """A per-head view [..., h, ..., d, ...] of a projection: d-entry i is
    sum over terms (table, mix) of table[t, i] * sum_j mix[i, j] * proj[h, j]
    (one term, no table, mix = identity: the projection itself; cos and sin
    terms: rotary). ``repeat``: each head serves that many consecutive heads
    (grouped-query attention)."""

    proj: Pending
    heads: int
    size: int
    axes: Axes
    terms: tuple[tuple[Tensor | None, Tensor], ...]
    repeat: int = 1


@dataclass(frozen=True)
class Scores:
    q: Heads
    k: Heads
    scale: float = 1.0
    causal: bool = False


@dataclass(frozen=True)
class Probs:
    scores: Scores


@dataclass(frozen=True)
class Context:
    """softmax(scale q k^T) v per head; ``axes`` end in ``hd`` once the heads are concatenated."""

    q: Heads
    k: Heads
    v: Heads
    scale: float
    causal: bool
    axes: Axes
    path: str
    label: str
    enable_gqa: bool = False


@dataclass(frozen=True)
class RmsParts:
    x: Wired
    stage: str  # square, mean, mean+eps, rsqrt, normed


#: activations a parameter-free module may compute, checked on float64 inputs
ACTIVATION_CANDIDATES: tuple[tuple[Activation, float, Callable[[Tensor], Tensor]], ...] = (
    (Activation.GELU, 0.0, F.gelu), (Activation.GELU, 1.0, lambda x: F.gelu(x, approximate="tanh")),
    (Activation.SILU, 0.0, F.silu), (Activation.RELU, 0.0, F.relu), (Activation.TANH, 0.0, torch.tanh),
    (Activation.SIGMOID, 0.0, torch.sigmoid),
)


def _module_of(node: fx.Node) -> tuple[str, str, str]:
    """(stack key, module path, class name) of the innermost module that made ``node``."""
    stack = node.meta.get("nn_module_stack") or {"": ("", "")}
    key, (path, cls) = list(stack.items())[-1]
    name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else cls.__name__
    return key, path, name


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["val"].shape)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or isinstance(v, Tensor) and v.dim() == 0


def _part(v: Pending, offset: int, size: int) -> Pending:
    """Outputs offset : offset + size of a pending Linear (one of a packed q/k/v)."""
    p = v.proj
    return replace(v, proj=replace(p, n=size, row0=p.row0 + offset, bias0=p.bias0 + offset), wired=None)


def _what(v) -> str:
    """How errors name what a node stands for."""
    names = {Wired: "a tensor of the network", Pending: "a Linear's output", Const: "a constant",
             Heads: "a per-head view of q, k or v", Scores: "attention scores", Probs: "attention probabilities",
             Context: "attention's heads", RmsParts: "a step of an RMSNorm"}
    if isinstance(v, ParamRef):
        return f"parameter {v.target!r}"
    return names.get(type(v), type(v).__name__)


def _mask_causal(mask: Tensor, tokens: int) -> bool | None:
    """Whether a constant attention mask (bool: True attends; float: added to
    the logits) is causal (True) or empty (False); None: neither."""
    mask = mask.broadcast_to(*mask.shape[:-2], tokens, tokens) if mask.dim() >= 2 else mask
    attend = mask if mask.dtype == torch.bool else mask == 0
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask <= -1e4)).all()):
        return None  # a float mask must add 0 or a value whose exp underflows to exactly 0
    lower = torch.ones(tokens, tokens, dtype=torch.bool).tril()
    if bool(attend.all()):
        return False
    return True if bool((attend == lower).all()) else None


class ExportReader:
    """Walks the nodes of one exported program, keeping what each stands for (``env``)."""

    def __init__(self, module: nn.Module, exported: torch.export.ExportedProgram):
        self.module, self.graph = module, exported.graph
        self.prog = Program()
        self.env: dict[fx.Node, object] = {}
        self.names: dict[tuple[str, str], int] = {}
        self.specs = {s.arg.name: s for s in exported.graph_signature.input_specs}
        self.constants = exported.constants
        tensors = module.state_dict(keep_vars=True)
        self.aliases: dict[int, list[str]] = {}
        for key, t in tensors.items():
            self.aliases.setdefault(id(t), []).append(key)
        self.persistent = set(tensors)
        self.batch = next((_shape(n)[0] for n in self.graph.nodes if n.op == "placeholder"
                           and self.specs[n.name].kind == InputKind.USER_INPUT
                           and isinstance(n.meta.get("val"), Tensor)), 1)  # splits rows (batch x tokens) back
        self.skip, self.activations = self._activation_modules()

    # -- helpers ----------------------------------------------------------------------
    def describe(self, node: fx.Node) -> str:
        _, path, cls = _module_of(node)
        return f"{path or type(self.module).__name__} ({cls or type(self.module).__name__}): " \
               f"aten node '{node.name}' ({node.target})"

    def fail(self, node: fx.Node, why: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(f"{self.describe(node)}: {why}")

    def lookup(self, a):
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.lookup(x) for x in a)
        return a

    def operands(self, node: fx.Node) -> tuple[object, object]:
        """The two operands of arithmetic, numbers as :class:`Const`."""
        return tuple(Const(v) if _is_number(v) else v for v in (self.lookup(a) for a in node.args[:2]))

    def arg(self, node: fx.Node, i: int, name: str, default=None):
        return self.lookup(node.args[i] if len(node.args) > i else node.kwargs.get(name, default))

    def name(self, node: fx.Node) -> str:
        """``<module path>.<op>``, numbered inside the module as fx names nodes
        (``add``, ``add_1``): export's own node names count over the whole model."""
        path = _module_of(node)[1]
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        count = self.names.get((path, op), 0)
        self.names[(path, op)] = count + 1
        return join(path, f"{op}_{count}" if count else op)

    def emit(self, node: fx.Node, cls, *args: int, axes: Axes, **fields) -> Wired:
        return Wired(self.prog.emit(cls(args=args, name=self.name(node), label=self.describe(node), **fields)), axes)

    def key(self, ref: ParamRef, node: fx.Node) -> str:
        """The state_dict key of a parameter as ``node`` uses it: for tied weights,
        the key of the module that makes the node (GPT-2's ``lm_head.weight``)."""
        mine = join(_module_of(node)[1], ref.target.rsplit(".", 1)[-1])
        return mine if mine in ref.keys else ref.target

    def named(self, ref, node: fx.Node) -> tuple[str, Tensor] | None:
        if ref is None:
            return None
        if not isinstance(ref, ParamRef):
            raise self.fail(node, "a layer's weight or bias must be a parameter")
        return self.key(ref, node), ref.tensor

    def wired(self, node: fx.Node, v) -> Wired:
        """``v`` as a tensor held by graph nodes (a Linear or an RMSNorm emitted now if pending)."""
        if isinstance(v, Wired):
            return v
        if isinstance(v, Pending):
            if v.wired is None:
                w = v.proj.weight[1]
                if v.proj.row0 or v.proj.n != w.size(1 if v.proj.transposed else 0):
                    raise self.fail(node, "a slice of a Linear's outputs is only supported as q, k or v of attention")
                tensors = {"weight": v.proj.weight} | ({"bias": v.proj.bias} if v.proj.bias else {})
                op = Layer(args=(v.src.value,), name=v.path, label=v.label, kind="linear", tensors=tensors,
                           geometry={"transposed": v.proj.transposed})
                v.wired = Wired(self.prog.emit(op), v.axes)
            return v.wired
        if isinstance(v, RmsParts) and v.stage == "normed":
            return self.rms_norm(node, v, None)
        if isinstance(v, ParamRef):
            raise self.fail(node, f"parameter {v.target!r} is used outside a supported layer")
        if isinstance(v, Const):
            raise self.fail(node, "expects a tensor of the network where a constant (computed without the inputs) is")
        raise self.fail(node, f"expects a tensor of the network, got {_what(v)} (used outside its pattern)")

    def canonical(self, node: fx.Node, w: Wired) -> Wired:
        """``w``, which must be batch-first ([B, T, D], [B, D] or [B, C, *spatial])."""
        if w.axes not in (("b", "t", "f"), ("b", "f")) and w.axes[:2] != ("b", "f"):
            raise self.fail(node, f"needs a batch-first value; this one has dims {w.axes}")
        return w

    # -- the walk: one method per node kind ---------------------------------------------
    def run(self) -> Program:
        for node in self.graph.nodes:
            if node in self.skip:
                continue
            if node.op == "output":
                self.output(node)
                return self.prog
            self.env[node] = getattr(self, node.op)(node)
        raise UnsupportedModuleError(f"{type(self.module).__name__}: the exported graph has no output")

    def placeholder(self, node: fx.Node):
        spec = self.specs[node.name]
        if spec.kind == InputKind.PARAMETER:
            t = self.module.get_parameter(spec.target)
            return ParamRef(spec.target, t.detach(), tuple(self.aliases.get(id(t), [spec.target])))
        if spec.kind == InputKind.BUFFER:
            t = self.module.get_buffer(spec.target)
            if spec.target in self.persistent:
                self.prog.consts[spec.target] = t.detach()
            return Const(t.detach())
        if spec.kind == InputKind.CONSTANT_TENSOR:
            return Const(self.constants[spec.target])
        val = node.meta.get("val")
        if not isinstance(val, Tensor):
            return Const(val)  # a flag such as use_cache
        value = self.prog.emit(Input(args=(), name=f"input:{node.name}"))
        if not val.is_floating_point():
            return Wired(value, ("b", "t")[:val.dim()])  # token ids
        roles = {2: ("b", "f"), 3: ("b", "t", "f"), 4: ("b", "f", "s", "s")}.get(val.dim())
        if roles is None:
            raise self.fail(node, f"an input of shape {tuple(val.shape)} is not [B, F], [B, T, D] or [B, C, H, W]")
        return Wired(value, roles)

    def call_function(self, node: fx.Node):
        if node in self.activations:
            return self.activation_module(node)
        if all(isinstance(self.env[n], Const) for n in node.all_input_nodes):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self.env[n].value)
            return Const(node.target(*args, **kwargs))
        packet = getattr(node.target, "overloadpacket", node.target)
        handler = ATEN.get(packet)
        if handler is None:
            raise self.fail(node, "unsupported operation")
        return handler(self, node)

    def output(self, node: fx.Node) -> None:
        outs = [o for o in fx.node.map_arg(node.args[0], lambda n: n) if isinstance(o, fx.Node)]
        if len(outs) != 1:
            raise UnsupportedModuleError(f"{type(self.module).__name__}: returns {len(outs)} tensors "
                                         f"({[o.name for o in outs]}); the graph holds one output")
        self.prog.output = self.wired(outs[0], self.env[outs[0]]).value

    # -- modules read whole -------------------------------------------------------------
    def _activation_modules(self) -> tuple[set[fx.Node], dict[fx.Node, tuple[fx.Node, Activation, float]]]:
        """Parameter-free modules that compute one of ACTIVATION_CANDIDATES in
        several aten ops: their last node -> (input node, activation, parameter);
        their other nodes are skipped."""
        runs: list[list[fx.Node]] = []
        for node in self.graph.nodes:
            key = _module_of(node)[0] if node.op == "call_function" else None
            if runs and key is not None and key == _module_of(runs[-1][-1])[0]:
                runs[-1].append(node)
            elif key:
                runs.append([node])
        skip, found = set(), {}
        for run in runs:
            inside = set(run)
            inputs = {n for r in run for n in r.all_input_nodes if n not in inside}
            outputs = [r for r in run if any(u not in inside for u in r.users)]
            if len(run) < 2 or len(inputs) != 1 or len(outputs) != 1 or outputs[0] is not run[-1]:
                continue
            (x,) = inputs
            if not isinstance(x.meta.get("val"), Tensor) or _shape(x) != _shape(run[-1]):
                continue
            kind = self._check_activation(_module_of(run[-1])[1])
            if kind is not None:
                skip |= inside - {run[-1]}
                found[run[-1]] = (x, *kind)
        return skip, found

    def _check_activation(self, path: str) -> tuple[Activation, float] | None:
        module = self.module.get_submodule(path)
        if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
            return None
        probe = torch.linspace(-6, 6, 97, dtype=torch.float64).reshape(1, 97) * torch.tensor([[1.0], [0.37]],
                                                                                           dtype=torch.float64)
        try:
            with torch.no_grad():
                got = module(probe)
        except Exception:  # not callable on one tensor: not an activation
            return None
        for kind, param, fn in ACTIVATION_CANDIDATES:
            if isinstance(got, Tensor) and got.shape == probe.shape and torch.allclose(got, fn(probe), rtol=1e-12,
                                                                                         atol=1e-14):
                return kind, param
        return None

    def activation_module(self, node: fx.Node) -> Wired:
        x, kind, param = self.activations[node]
        w = self.wired(node, self.env[x])
        _, path, _ = _module_of(node)
        op = Act(args=(w.value,), name=path, label=self.describe(node), kind=kind, param=param)
        return Wired(self.prog.emit(op), w.axes)

    # -- dims ---------------------------------------------------------------------------
    def regroup(self, node: fx.Node, axes: Axes, shape: tuple[int, ...], out: tuple[int, ...]) -> Axes:
        """The dim roles after a reshape from ``shape`` to ``out`` that only
        merges or splits dims along their roles (rows ``bt`` split into b, t);
        a reshape that cuts a role apart is refused."""
        atoms: list[tuple[str, int]] = []
        for roles, n in zip(axes, shape):
            if roles == "bt":
                atoms += [("b", self.batch), ("t", n // self.batch)]
            elif roles:
                atoms.append((roles, n))
        result, i = [], 0
        for n in out:
            group, size = "", 1
            while i < len(atoms) and (size < n or (n == 1 and not group and atoms[i][1] == 1)):
                group, size, i = group + atoms[i][0], size * atoms[i][1], i + 1
            if size != n:
                raise self.fail(node, f"a reshape {list(shape)} -> {list(out)} that cuts dims {axes} apart")
            result.append(group)
        if i != len(atoms):
            raise self.fail(node, f"a reshape {list(shape)} -> {list(out)} that cuts dims {axes} apart")
        return tuple(result)

    def reshape(self, node: fx.Node):
        """``view``/``reshape``/``flatten``: merging batch and tokens into rows
        and back, a feature map's spatial dims (``flatten(2)``) or all its dims
        into features; a projection's features split into heads."""
        v, shape, out = self.lookup(node.args[0]), _shape(node.args[0]), _shape(node)
        if shape == out:
            return v
        if isinstance(v, Pending) and out[:-2] == shape[:-1] and out[-2] * out[-1] == shape[-1]:
            return Heads(v, out[-2], out[-1], v.axes[:-1] + ("h", "d"),
                         ((None, torch.eye(out[-1], dtype=torch.float64)),))
        if isinstance(v, (Pending, Heads, Context)):
            axes = self.regroup(node, v.axes, shape, out)
            allowed = {"b", "t", "bt", "f", ""} if isinstance(v, Pending) else \
                {"b", "t", "h", "d", "hr", ""} if isinstance(v, Heads) else {"b", "t", "bt", "h", "d", "hd", ""}
            if not set(axes) <= allowed:
                raise self.fail(node, f"a reshape to dims {axes} of a piece of attention")
            if isinstance(v, Heads):
                return replace(v, axes=tuple("h" if a == "hr" else a for a in axes))
            return replace(v, axes=axes)
        w = self.wired(node, v)
        axes = self.regroup(node, w.axes, shape, out)
        if "fs" in axes or "fss" in axes:  # a feature map flattened into features
            return self.emit(node, Flatten, w.value, start_dim=1, axes=tuple("f" if "f" in a else a for a in axes))
        if "ss" in axes:  # flatten(2): the spatial dims of a map become one
            return self.emit(node, Flatten, w.value, start_dim=2, axes=tuple("s" if a == "ss" else a for a in axes))
        if not set(axes) <= {"b", "t", "bt", "f", "s", ""}:
            raise self.fail(node, f"a reshape to dims {axes}: flattening tokens into features is not supported")
        return Wired(w.value, axes)

    def permute(self, node: fx.Node):
        """``transpose``/``permute``: a feature map [B, C, L] to tokens [B, L, C]; any
        reordering of the other dims (and of the dims of attention's pieces)."""
        v = self.lookup(node.args[0])
        axes = v.axes if isinstance(v, (Heads, Context, Pending)) else self.wired(node, v).axes
        if node.target.overloadpacket is aten.permute:
            order = [d % len(axes) for d in node.args[1]]
        else:
            order = list(range(len(axes)))
            if node.target.overloadpacket is aten.transpose:
                i, j = (d % len(axes) for d in node.args[1:3])
                order[i], order[j] = order[j], order[i]
            else:  # aten.t
                order.reverse()
        new = tuple(axes[d] for d in order)
        if isinstance(v, (Heads, Context, Pending)):
            return replace(v, axes=new)
        if new == axes:
            return v
        w = self.wired(node, v)
        if w.axes == ("b", "f", "s") and new == ("b", "s", "f"):
            return self.emit(node, ToTokens, w.value, axes=("b", "t", "f"))
        if "f" in w.axes and new.index("f") != w.axes.index("f"):
            raise self.fail(node, f"a transpose of dims {w.axes} to {new} moves the features")
        return Wired(w.value, new)

    def unsqueeze(self, node: fx.Node):
        v = self.lookup(node.args[0])
        dim = node.args[1] % (len(_shape(node.args[0])) + 1)
        if isinstance(v, (ParamRef, Const)):
            return v
        axes = v.axes if isinstance(v, (Heads, Context, Pending)) else self.wired(node, v).axes
        new = axes[:dim] + ("",) + axes[dim:]
        return replace(v, axes=new) if isinstance(v, (Heads, Context, Pending)) else Wired(v.value, new)

    def squeeze(self, node: fx.Node):
        v = self.wired(node, self.lookup(node.args[0]))
        shape = _shape(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else [i for i, n in enumerate(shape) if n == 1]
        dims = {d % len(shape) for d in ([dims] if isinstance(dims, int) else dims) if shape[d] == 1}
        if any(v.axes[d] != "" for d in dims):
            raise self.fail(node, f"squeezes dims {sorted(dims)} of dims {v.axes} (only broadcast dims)")
        return Wired(v.value, tuple(a for i, a in enumerate(v.axes) if i not in dims))

    def expand(self, node: fx.Node):
        """Broadcasting a parameter (class tokens) or size-1 dims; a unsqueezed
        key/value head dim expanded to the query group (grouped-query attention)."""
        v = self.lookup(node.args[0])
        shape, out = _shape(node.args[0]), _shape(node)
        if isinstance(v, ParamRef) or shape == out:
            return v
        grown = [i for i, (a, b) in enumerate(zip(shape, out)) if a != b]
        if isinstance(v, Heads) and len(grown) == 1 and v.axes[grown[0]] == "" and v.repeat == 1 \
                and grown[0] > 0 and v.axes[grown[0] - 1] == "h":
            axes = list(v.axes)
            axes[grown[0]] = "r"
            return replace(v, axes=tuple(axes), repeat=out[grown[0]])
        w = self.wired(node, v)
        if any(w.axes[i] != "" for i in grown):
            raise self.fail(node, f"expands dims {w.axes} beyond broadcasting")
        return w

    def same(self, node: fx.Node):
        """Dtype, device and layout changes, copies and dropout (the identity in
        eval): the value itself (a graph holds values, not their dtype)."""
        return self.lookup(node.args[0])

    def nothing(self, node: fx.Node) -> None:
        """Checks export records (``_assert_tensor_metadata``): nothing to wire."""
        return None

    def getitem(self, node: fx.Node):
        return self.lookup(node.args[0])[node.args[1]]

    def select(self, node: fx.Node) -> Wired:
        """``x[:, k]`` of a token sequence: the class-token readout."""
        w = self.wired(node, self.lookup(node.args[0]))
        dim, index = node.args[1] % len(w.axes), node.args[2]
        if w.axes[dim] == "":
            return Wired(w.value, w.axes[:dim] + w.axes[dim + 1:])
        if w.axes != ("b", "t", "f") or dim != 1:
            raise self.fail(node, f"selecting along dim {dim} of dims {w.axes} (only x[:, k] of [B, T, D])")
        return self.emit(node, SelectToken, w.value, index=index % _shape(node.args[0])[1], axes=("b", "f"))

    def slice(self, node: fx.Node):
        """Slices that keep everything; a slice of head dims (rotary's rotate_half)."""
        v = self.lookup(node.args[0])
        dim = self.arg(node, 1, "dim", 0) % len(_shape(node.args[0]))
        n = _shape(node.args[0])[dim]
        start, end, step = self.arg(node, 2, "start", None), self.arg(node, 3, "end", None), self.arg(node, 4, "step", 1)
        keep = range(n)[slice(start, end, step)]
        if len(keep) == n:
            return v
        if isinstance(v, Heads) and v.axes[dim] == "d":
            rows = torch.tensor(list(keep), dtype=torch.long)
            return replace(v, terms=tuple((None if t is None else t[:, rows], m[rows]) for t, m in v.terms))
        if isinstance(v, Pending) and v.axes[dim] == "f" and keep.step == 1:
            return _part(v, keep.start, len(keep))  # q, k or v of a packed projection (Phi-3's qkv_proj)
        raise self.fail(node, f"a slice {start}:{end}:{step} of a dim of size {n}")

    def split(self, node: fx.Node) -> list[Pending]:
        """A packed q/k/v projection split into its parts (GPT-2's ``c_attn``)."""
        v = self.lookup(node.args[0])
        dim = self.arg(node, 2, "dim", 0) % len(_shape(node.args[0]))
        if not isinstance(v, Pending) or v.axes[dim] != "f":
            raise self.fail(node, "only the split of a Linear's outputs into q, k and v is supported")
        sizes = [t.shape[dim] for t in node.meta["val"]]
        return [_part(v, sum(sizes[:i]), size) for i, size in enumerate(sizes)]

    # -- layers -------------------------------------------------------------------------
    def linear(self, node: fx.Node):
        """``F.linear`` (weight [out, in]), ``addmm(bias, x, W)`` and ``x @ W``
        (HF's Conv1D: weight [in, out]): a Linear, or attention's output projection."""
        packet = node.target.overloadpacket
        if packet is aten.linear:
            x, w, b, transposed = self.lookup(node.args[0]), node.args[1], self.arg(node, 2, "bias"), False
        elif packet is aten.addmm:
            b, x, w, transposed = self.lookup(node.args[0]), self.lookup(node.args[1]), node.args[2], True
            if self.arg(node, 3, "beta", 1) != 1 or self.arg(node, 4, "alpha", 1) != 1:
                raise self.fail(node, "addmm with beta or alpha other than 1")
        else:
            x, w, b, transposed = self.lookup(node.args[0]), node.args[1], None, True
        weight = self.named(self.lookup(w), node)
        if weight[1].dim() != 2:
            raise self.fail(node, f"weight of shape {tuple(weight[1].shape)} is not a matrix")
        proj = Proj(weight, weight[1].size(1 if transposed else 0), bias=self.named(b, node), transposed=transposed)
        if isinstance(x, Context):
            return self.attention(node, x, proj)
        src = self.wired(node, x)
        return Pending(src, proj, _module_of(node)[1], self.describe(node), src.axes)

    def matmul(self, node: fx.Node):
        a, b = self.lookup(node.args[0]), self.lookup(node.args[1])
        if isinstance(a, Heads) and isinstance(b, Heads):
            return self.scores(node, a, b)
        if isinstance(a, Probs) and isinstance(b, Heads):
            s = a.scores
            return self.context(node, s.q, s.k, b, s.scale, s.causal, b.axes)
        if isinstance(b, ParamRef):
            return self.linear(node)
        raise self.fail(node, f"a product of {_what(a)} and {_what(b)}")

    def conv(self, node: fx.Node) -> Wired:
        x = self.canonical(node, self.wired(node, self.lookup(node.args[0])))
        weight = self.named(self.lookup(node.args[1]), node)
        if node.target.overloadpacket is aten.convolution:
            stride, padding, dilation, transposed, _, groups = (self.lookup(a) for a in node.args[3:9])
            if transposed:
                raise self.fail(node, "transposed convolutions are not supported")
        else:
            stride, padding, dilation, groups = (self.arg(node, i, n, d) for i, n, d in
                                                 ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1),
                                                  (6, "groups", 1)))
        if weight[1].dim() not in (3, 4):
            raise self.fail(node, f"a {weight[1].dim() - 2}-d convolution (only 1-d and 2-d)")
        bias = self.named(self.arg(node, 2, "bias"), node)
        tensors = {"weight": weight} | ({"bias": bias} if bias else {})
        geometry = conv_geometry(tuple(weight[1].shape[2:]), stride, padding, dilation, groups, "zeros",
                                 self.describe(node))
        return self.layer(node, x, "conv", tensors, geometry)

    def layer(self, node: fx.Node, x: Wired, kind: str, tensors: dict, geometry: dict | None = None,
              axes: Axes | None = None) -> Wired:
        """Emit a :class:`Layer` named by the module that made ``node``, reading ``x``."""
        op = Layer(args=(x.value,), name=_module_of(node)[1], label=self.describe(node), kind=kind,
                   tensors={r: t for r, t in tensors.items() if t is not None}, geometry=geometry or {})
        return Wired(self.prog.emit(op), x.axes if axes is None else axes)

    def layer_norm(self, node: fx.Node) -> Wired:
        x = self.wired(node, self.lookup(node.args[0]))
        shape = list(node.args[1])
        if len(shape) != 1 or x.axes[-1] != "f":
            raise self.fail(node, f"LayerNorm over {shape} of dims {x.axes} (only over the features)")
        tensors = {role: self.named(self.arg(node, i, role), node) for i, role in ((2, "weight"), (3, "bias"))}
        return self.layer(node, x, "layer_norm", tensors, {"num_features": shape[0]})

    def rms_norm(self, node: fx.Node, parts: RmsParts, weight: ParamRef | None) -> Wired:
        tensors = {"weight": None if weight is None else self.named(weight, node)}
        return self.layer(node, parts.x, "rms_norm", tensors, {"num_features": _shape(node)[-1]})

    def embedding(self, node: fx.Node) -> Wired:
        """Token ids (a network input) or positions (constant ids 0..T-1) through a table."""
        weight = self.named(self.lookup(node.args[0]), node)
        ids = self.lookup(node.args[1])
        if isinstance(ids, Const):
            t = ids.value
            n = t.size(-1) if isinstance(t, Tensor) and t.dim() in (1, 2) else 0
            if not n or not bool((t == torch.arange(n, device=t.device)).all()):
                raise self.fail(node, "an embedding of constant ids other than the positions 0..T-1")
            ids = self.emit(node, Positions, axes=("", "t")[2 - t.dim():])
        w = self.wired(node, ids)
        if "f" in w.axes:
            raise self.fail(node, "an embedding must read token ids or positions")
        return self.layer(node, w, "embedding", {"weight": weight}, axes=w.axes + ("f",))

    def activation(self, node: fx.Node) -> Wired:
        kind, param = ATEN_ACTIVATIONS[node.target.overloadpacket](self, node)
        x = self.wired(node, self.lookup(node.args[0]))
        return self.emit(node, Act, x.value, kind=kind, param=param, axes=x.axes)

    def softmax(self, node: fx.Node):
        v, dim = self.lookup(node.args[0]), node.args[1]
        if isinstance(v, Scores):
            if dim % 4 != 3:
                raise self.fail(node, "a softmax of attention scores that is not over the keys")
            return Probs(v)
        x = self.wired(node, v)
        if x.axes[dim] != "f":
            raise self.fail(node, "a softmax that is not over the features")
        log = node.target.overloadpacket in (aten.log_softmax, aten._log_softmax)
        return self.emit(node, Act, x.value, kind=Activation.LOG_SOFTMAX if log else Activation.SOFTMAX, axes=x.axes)

    # -- arithmetic -------------------------------------------------------------------------
    def add(self, node: fx.Node):
        """A residual sum; a positional-embedding parameter added to tokens; the
        eps of an RMSNorm; rotary's cos and sin terms; a mask on attention scores."""
        a, b = self.operands(node)
        if self.arg(node, 2, "alpha", 1) != 1:
            raise self.fail(node, "add with alpha other than 1")
        if isinstance(b, RmsParts) or isinstance(b, (Scores, Heads)) and not isinstance(a, (Scores, Heads)):
            a, b = b, a
        if isinstance(a, RmsParts) and a.stage == "mean" and isinstance(b, Const) and _is_number(b.value):
            return replace(a, stage="mean+eps")
        if isinstance(a, Heads) and isinstance(b, Heads):
            if (a.proj, a.axes, a.heads, a.repeat) != (b.proj, b.axes, b.heads, b.repeat):
                raise self.fail(node, "a sum of head views of different projections")
            return replace(a, terms=a.terms + b.terms)
        if isinstance(a, Scores) and isinstance(b, Const):
            causal = _mask_causal(torch.as_tensor(b.value), _shape(node)[-1])
            if causal is None:
                raise self.fail(node, "an attention mask computed in forward that is neither empty nor causal")
            return replace(a, causal=a.causal or causal)
        if isinstance(a, ParamRef) or isinstance(b, ParamRef):
            ref, other = (a, b) if isinstance(a, ParamRef) else (b, a)
            x = self.canonical(node, self.wired(node, other))
            key = self.key(ref, node)
            param = self.prog.emit(Param(args=(), name=key, label=self.describe(node), tensor=(key, ref.tensor)))
            return self.emit(node, Add, x.value, param, axes=x.axes)
        x, y = self.wired(node, a), self.wired(node, b)
        if len(x.axes) != len(y.axes) or any(p != q and "" not in (p, q) for p, q in zip(x.axes, y.axes)):
            raise self.fail(node, f"a sum of values with dims {x.axes} and {y.axes}")
        return self.emit(node, Add, x.value, y.value, axes=tuple(p or q for p, q in zip(x.axes, y.axes)))

    def mul(self, node: fx.Node):
        """A gated MLP's act(gate) * up; the steps of an RMSNorm; rotary's cos and
        sin tables and constant factors on q, k and attention scores."""
        a, b = self.operands(node)
        if isinstance(b, (RmsParts, Heads, Scores)) or isinstance(a, Const):
            a, b = b, a
        if isinstance(a, RmsParts) and a.stage == "rsqrt" and b == a.x:
            return replace(a, stage="normed")
        if isinstance(a, RmsParts) and a.stage == "normed" and isinstance(b, ParamRef):
            return self.rms_norm(node, a, b)
        if isinstance(a, (Heads, Scores)) and isinstance(b, Const):
            return self.scaled(node, a, b.value)
        if isinstance(a, (Wired, Pending)) and isinstance(b, (Wired, Pending)) and _shape(node.args[0]) == _shape(
                node.args[1]):
            x, y = self.wired(node, a), self.wired(node, b)
            return self.emit(node, Mul, x.value, y.value, axes=x.axes)
        raise self.fail(node, f"a product of {_what(a)} and {_what(b)} (only act(gate) * up of "
                              "equal shapes, norm steps, rotary tables and constant factors in attention)")

    def div(self, node: fx.Node) -> Scores:
        a, b = self.operands(node)
        if isinstance(a, Scores) and isinstance(b, Const) and _is_number(b.value):
            return replace(a, scale=a.scale / float(b.value))
        raise self.fail(node, "only attention scores divided by a constant")

    def scaled(self, node: fx.Node, v: Heads | Scores, c) -> Heads | Scores:
        if _is_number(c):
            if isinstance(v, Scores):
                return replace(v, scale=v.scale * float(c))
            return replace(v, terms=tuple((t, m * float(c)) for t, m in v.terms))
        if isinstance(v, Heads) and all(t is None for t, _ in v.terms):
            table = self.head_table(node, v, torch.as_tensor(c))
            return replace(v, terms=tuple((table, m) for _, m in v.terms))
        raise self.fail(node, "a product of attention scores with a tensor")

    def head_table(self, node: fx.Node, v: Heads, c: Tensor) -> Tensor:
        """A constant multiplying a head view, as a table [T, d] (it must not vary over batch or heads)."""
        full = c.to(torch.float64).expand(_shape(node))
        for dim in reversed(range(full.dim())):
            if v.axes[dim] not in ("t", "d"):
                first = full.narrow(dim, 0, 1)
                if not torch.equal(full, first.expand_as(full)):
                    raise self.fail(node, f"a table that varies along the {v.axes[dim] or 'broadcast'} dim")
                full = first.squeeze(dim)
        kept = [a for a in v.axes if a in ("t", "d")]
        if sorted(kept) != ["d", "t"]:
            raise self.fail(node, "a table on head dims that does not vary with the token position")
        return full if kept == ["t", "d"] else full.T

    def neg(self, node: fx.Node) -> Heads:
        v = self.lookup(node.args[0])
        if not isinstance(v, Heads):
            raise self.fail(node, "a negation outside rotary embeddings")
        return replace(v, terms=tuple((t, -m) for t, m in v.terms))

    def cat(self, node: fx.Node):
        """Features or class tokens (``torch.cat([cls, x], 1)``) joined; head dims
        re-ordered (rotary's rotate_half)."""
        parts = self.lookup(node.args[0])
        dim = self.arg(node, 1, "dim", 0)
        if all(isinstance(p, Heads) for p in parts):
            parts = [p for p in parts if p.terms[0][1].numel()] or parts  # an empty pass-through of full rotary
            if len(parts) == 1:
                return parts[0]
            first = parts[0]
            if any((p.proj, p.axes, p.heads) != (first.proj, first.axes, first.heads) or len(p.terms) != 1
                   or p.terms[0][0] is not None for p in parts) or first.axes[dim] != "d":
                raise self.fail(node, "a concatenation of head views that is not a re-ordering of one head's dims")
            return replace(first, terms=((None, torch.cat([p.terms[0][1] for p in parts])),))
        values = []
        for p in parts:
            if isinstance(p, ParamRef):
                key = self.key(p, node)
                values.append(self.prog.emit(Param(args=(), name=key, label=self.describe(node), tensor=(key, p.tensor))))
            else:
                values.append(self.canonical(node, self.wired(node, p)).value)
        axes = next(p.axes for p in parts if not isinstance(p, ParamRef))
        return self.emit(node, Cat, *values, dim=dim, axes=axes)

    def mean(self, node: fx.Node):
        """Mean over tokens or spatial dims (pooling); over the features with
        keepdim, of a square: an RMSNorm step."""
        v = self.lookup(node.args[0])
        dims = self.arg(node, 1, "dim")
        keepdim = self.arg(node, 2, "keepdim", False)
        dims = tuple(d % len(_shape(node.args[0])) for d in ([dims] if isinstance(dims, int) else dims))
        if isinstance(v, RmsParts) and v.stage == "square" and keepdim and [v.x.axes[d] for d in dims] == ["f"]:
            return replace(v, stage="mean")
        x = self.canonical(node, self.wired(node, v))
        if keepdim or {x.axes[d] for d in dims} not in ({"t"}, {"s"}):
            raise self.fail(node, f"a mean over dims {dims} of dims {x.axes} (only over tokens or spatial dims)")
        return self.emit(node, Mean, x.value, dims=dims, axes=tuple(a for i, a in enumerate(x.axes) if i not in dims))

    def pow(self, node: fx.Node) -> RmsParts:
        if node.args[1] != 2:
            raise self.fail(node, "a power other than the square of an RMSNorm")
        return RmsParts(self.wired(node, self.lookup(node.args[0])), "square")

    def rsqrt(self, node: fx.Node) -> RmsParts:
        v = self.lookup(node.args[0])
        if not (isinstance(v, RmsParts) and v.stage == "mean+eps"):
            raise self.fail(node, "rsqrt outside an RMSNorm (x * rsqrt(mean(x^2, -1, keepdim=True) + eps))")
        return replace(v, stage="rsqrt")

    # -- attention ------------------------------------------------------------------------
    def scores(self, node: fx.Node, q: Heads, k: Heads) -> Scores:
        if q.axes != ("b", "h", "t", "d") or k.axes != ("b", "h", "d", "t"):
            raise self.fail(node, f"q {q.axes} @ k {k.axes} is not q @ k^T per head")
        return Scores(q, replace(k, axes=("b", "h", "t", "d")))

    def sdpa(self, node: fx.Node) -> Context:
        q, k, v = (self.lookup(a) for a in node.args[:3])
        if not all(isinstance(x, Heads) for x in (q, k, v)):
            raise self.fail(node, "scaled_dot_product_attention of values that are not head views of projections")
        mask = self.arg(node, 3, "attn_mask")
        causal = bool(self.arg(node, 5, "is_causal", False))
        if mask is not None:
            kind = _mask_causal(mask.value, _shape(node)[2]) if isinstance(mask, Const) else None
            if kind is None:
                raise self.fail(node, "an attention mask that is neither empty nor causal (or not a constant)")
            causal = causal or kind
        scale = self.arg(node, 6, "scale")
        scale = q.size ** -0.5 if scale is None else float(scale)
        return self.context(node, q, k, v, scale, causal, q.axes, bool(self.arg(node, 7, "enable_gqa", False)))

    def context(self, node: fx.Node, q: Heads, k: Heads, v: Heads, scale: float, causal: bool, axes: Axes,
                enable_gqa: bool = False) -> Context:
        if (q.axes, k.axes, v.axes) != (("b", "h", "t", "d"),) * 3:
            raise self.fail(node, f"attention of q {q.axes}, k {k.axes}, v {v.axes}: each must be [B, heads, T, d]")
        return Context(q, k, v, scale, causal, axes, _module_of(node)[1], self.describe(node), enable_gqa)

    def attention(self, node: fx.Node, ctx: Context, o: Proj) -> Wired:
        """The output projection reads the concatenated heads: one Attention op."""
        if ctx.axes[-1] != "hd":
            raise self.fail(node, f"an output projection of attention's dims {ctx.axes} (heads not concatenated)")
        q, k, v = ctx.q, ctx.k, ctx.v
        groups = k.heads if ctx.enable_gqa or k.repeat > 1 else q.heads
        if q.repeat != 1 or k.heads != v.heads or k.size != q.size or q.heads % groups \
                or k.repeat != v.repeat or k.repeat not in (1, q.heads // groups) or k.heads != groups:
            raise self.fail(node, f"{q.heads} query heads of size {q.size} do not match {k.heads} key and "
                                  f"{v.heads} value heads of sizes {k.size}, {v.size}")
        fq, rq = self.head_rotation(node, q)
        fk, rk = self.head_rotation(node, k)
        fv, rv = self.head_rotation(node, v)
        if rv is not None or fv != 1.0 or (rq is None) != (rk is None) or (rq is not None and not (
                torch.equal(rq[0].pairs, rk[0].pairs) and torch.equal(rq[0].freq, rk[0].freq))):
            raise self.fail(node, "q and k must be rotated alike (rotary embeddings) and v not at all")
        rotary, scale = (None, 1.0) if rq is None else (rq[0], rq[1] * rk[1])
        op = Attention(args=(q.proj.src.value, k.proj.src.value, v.proj.src.value), name=ctx.path, label=ctx.label,
                       heads=q.heads, q=q.proj.proj, k=k.proj.proj, v=v.proj.proj, o=o,
                       scale=ctx.scale * fq * fk * scale, causal=ctx.causal,
                       kv_heads=None if groups == q.heads else groups, rotary=rotary)
        return Wired(self.prog.emit(op), ctx.axes[:-1] + ("f",))

    def head_rotation(self, node: fx.Node, h: Heads) -> tuple[float, tuple[Rotary, float] | None]:
        """(factor c, rotary and its amplitude a, or None) of a head view that is
        c * proj, or a * c * (cos(w t) proj + sin(w t) R proj) with R turning
        rotary pairs (i, j) by 90 degrees: R proj_i = -proj_j, R proj_j = proj_i."""
        eye = torch.eye(h.size, dtype=torch.float64)
        if len(h.terms) == 1 and h.terms[0][0] is None:
            c = float(h.terms[0][1][0, 0])
            if torch.equal(h.terms[0][1], c * eye):
                return c, None
        elif len(h.terms) == 2 and all(t is not None for t, _ in h.terms):
            (cos, m_cos), (sin, m_sin) = sorted(h.terms, key=lambda term: float(term[0][0].abs().sum()), reverse=True)
            c = float(m_cos[0, 0])
            turn = m_sin / c if c else m_sin
            if c and torch.equal(m_cos, c * eye) and torch.equal(turn @ turn, -eye) and bool(
                    (turn.abs().sum(1) == 1).all()):
                pairs = (turn == -1).nonzero()  # (i, j): entry i gets -proj_j
                return c, self.rotary(node, pairs, cos, sin)
        raise self.fail(node, "a combination of head dims that is neither the projection nor a rotary embedding")

    def rotary(self, node: fx.Node, pairs: Tensor, cos: Tensor, sin: Tensor) -> tuple[Rotary, float]:
        """The frequency of each rotary pair, read from the model's ``inv_freq``
        buffer whose tables a * cos(w t), a * sin(w t) match ``cos`` and ``sin``
        [T, d] (computed by the model, checked to float32 precision)."""
        t = torch.arange(cos.size(0), dtype=torch.float64)[:, None]
        amplitude = float(cos[0, 0])
        for path, m in self.module.named_modules():
            buffer = getattr(m, "inv_freq", None)
            if not isinstance(buffer, Tensor) or buffer.numel() != len(pairs):
                continue
            kind = str(getattr(m, "rope_type", "default"))
            if "dynamic" in kind or "longrope" in kind:  # frequencies that change with the sequence length
                raise self.fail(node, f"rotary embeddings of type {kind!r} ({path}) depend on the sequence length")
            freq = torch.empty(cos.size(1), dtype=torch.float64)
            freq[pairs[:, 0]] = freq[pairs[:, 1]] = buffer.detach().to(torch.float64)
            if torch.allclose(cos, amplitude * torch.cos(t * freq), rtol=1e-5, atol=1e-5) and \
                    torch.allclose(sin, amplitude * torch.sin(t * freq), rtol=1e-5, atol=1e-5):
                return Rotary(pairs, buffer.detach().to(torch.float64).clone()), amplitude
        raise self.fail(node, "rotary cos/sin tables that match no inv_freq buffer of the model")


def _gelu(reader: ExportReader, node: fx.Node) -> tuple[Activation, float]:
    return Activation.GELU, float(reader.arg(node, 1, "approximate", "none") == "tanh")


def _param(kind: Activation, i: int, name: str, default: float):
    return lambda reader, node: (kind, float(reader.arg(node, i, name, default)))


def _plain(kind: Activation):
    return lambda reader, node: (kind, 0.0)


#: aten activations -> (kind, parameter) of a node
ATEN_ACTIVATIONS: dict[object, Callable[[ExportReader, fx.Node], tuple[Activation, float]]] = {
    aten.relu: _plain(Activation.RELU), aten.gelu: _gelu, aten.silu: _plain(Activation.SILU),
    aten.tanh: _plain(Activation.TANH), aten.sigmoid: _plain(Activation.SIGMOID),
    aten.leaky_relu: _param(Activation.LEAKY_RELU, 1, "negative_slope", 0.01),
    aten.elu: _param(Activation.ELU, 1, "alpha", 1.0), aten.softplus: _param(Activation.SOFTPLUS, 1, "beta", 1.0),
}
Handler = Callable[[ExportReader, fx.Node], object]
#: call_function nodes by aten op (overload packet)
ATEN: dict[object, Handler] = {
    **dict.fromkeys((aten._to_copy, aten.to, aten.type_as, aten.contiguous, aten.clone, aten.alias, aten.detach,
                     aten.dropout, aten.lift_fresh_copy), ExportReader.same),
    **dict.fromkeys((aten._assert_tensor_metadata, aten._assert_scalar), ExportReader.nothing),
    operator.getitem: ExportReader.getitem,
    **dict.fromkeys((aten.view, aten.reshape, aten._unsafe_view, aten.flatten), ExportReader.reshape),
    **dict.fromkeys((aten.transpose, aten.permute, aten.t), ExportReader.permute),
    aten.unsqueeze: ExportReader.unsqueeze, aten.squeeze: ExportReader.squeeze, aten.expand: ExportReader.expand,
    aten.select: ExportReader.select, aten.slice: ExportReader.slice, aten.split: ExportReader.split,
    aten.split_with_sizes: ExportReader.split, aten.chunk: ExportReader.split, aten.cat: ExportReader.cat,
    **dict.fromkeys((aten.linear, aten.addmm, aten.mm), ExportReader.linear), aten.matmul: ExportReader.matmul,
    **dict.fromkeys((aten.conv1d, aten.conv2d, aten.convolution), ExportReader.conv),
    aten.layer_norm: ExportReader.layer_norm, aten.embedding: ExportReader.embedding,
    **dict.fromkeys(ATEN_ACTIVATIONS, ExportReader.activation),
    **dict.fromkeys((aten.softmax, aten._softmax, aten.log_softmax, aten._log_softmax), ExportReader.softmax),
    aten.add: ExportReader.add, aten.mul: ExportReader.mul, aten.div: ExportReader.div, aten.neg: ExportReader.neg,
    aten.mean: ExportReader.mean, aten.pow: ExportReader.pow, aten.rsqrt: ExportReader.rsqrt,
    aten.scaled_dot_product_attention: ExportReader.sdpa,
}
