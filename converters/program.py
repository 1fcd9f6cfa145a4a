"""The program between a network and its graph: operations on numbered values.

A network becomes a :class:`Program`: a list of operations in execution
order, each reading values (``args``, value ids) and writing one (``out``).
A value stands for a tensor of the forward pass: the network input, the
output of a layer, a parameter used directly (positional embedding, class
token) or ``torch.arange`` positions. Chains (Sequentials) and DAGs (torch.fx
traces with residuals, concatenations, attention; torch.export graphs of
Hugging Face models) share this form, so one graph builder wires all of them.
Operations keep torch's own meaning (``dim`` arguments as written, batch
first): :mod:`converters.wire_program` decides what they mean for the feature
layout of the value they read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from torch import Tensor

from graphnfn.graph import Activation

from .errors import ConversionError

Named = tuple[str, Tensor]  # (state_dict key, tensor)


@dataclass(kw_only=True)
class Op:
    """``name`` names the node group the op creates (a module path or fx node
    name); ``label`` is how errors name the op (defaults to ``name``)."""

    args: tuple[int, ...]
    out: int = -1
    name: str = ""
    label: str = ""

    def __post_init__(self):
        self.label = self.label or self.name

    def params(self) -> Iterator[Named]:
        """Floating-point state this op stores in the graph."""
        return iter(())

    def require(self, cond: bool, why: str) -> None:
        """A ConversionError naming this op (a layer by its weight's key) unless ``cond``."""
        if not cond:
            tensors = getattr(self, "tensors", {})
            where = tensors["weight"][0] if "weight" in tensors else self.label
            raise ConversionError(f"{where or type(self).__name__}: {why}")


@dataclass(kw_only=True)
class Input(Op):
    """A network input; its size is set by the first operation that reads it."""


@dataclass(kw_only=True)
class Layer(Op):
    """A layer with parameters. ``kind``: ``linear``, ``conv``, ``batch_norm``,
    ``layer_norm``, ``rms_norm`` or ``embedding``. ``tensors`` maps a role
    (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``) to its (state_dict key, tensor); ``geometry``
    holds conv stride/padding/dilation as (h, w) pairs and the padding mode,
    the normalised feature count, or ``transposed`` for a Linear whose weight
    is stored [in, out] (Hugging Face's Conv1D in GPT-2)."""

    kind: str
    tensors: dict[str, Named]
    geometry: dict[str, object] = field(default_factory=dict)

    @property
    def weight(self) -> Tensor | None:
        return self.tensors["weight"][1] if "weight" in self.tensors else None

    @property
    def matrix(self) -> Tensor:
        """The weight as [out, in, *kernel] (a view of a transposed weight)."""
        return self.weight.T if self.geometry.get("transposed") else self.weight

    def params(self) -> Iterator[Named]:
        return (kt for role, kt in self.tensors.items() if role != "num_batches_tracked")


@dataclass(kw_only=True)
class Act(Op):
    kind: Activation
    param: float = 0.0


@dataclass(kw_only=True)
class Pool(Op):
    """Pooling. ``size``: window size (product of the kernel dims), or -P for
    adaptive pooling to P spatial positions (-1: global pooling);
    ``positions``: P for adaptive pooling, else None (not known)."""

    kind: str  # "max" | "avg"
    size: int
    positions: int | None = None


@dataclass(kw_only=True)
class Flatten(Op):
    """``start_dim`` 1: to [batch, features]; 2: merge the spatial dims of a
    feature map (a patch embedding before its transpose to tokens), into
    ``channels`` channels where a reshape says so."""

    start_dim: int = 1
    channels: int | None = None


@dataclass(kw_only=True)
class ToTokens(Op):
    """The transpose [B, C, L] -> [B, L, C] that makes a feature map a token sequence."""


@dataclass(kw_only=True)
class Mean(Op):
    """``x.mean(dims)``: global pooling over spatial dims or over tokens."""

    dims: tuple[int, ...]


@dataclass(kw_only=True)
class SelectToken(Op):
    """``x[:, index]`` of a token sequence (the class-token readout)."""

    index: int


@dataclass(kw_only=True)
class Mul(Op):
    """Elementwise product of two values of the same features (a gated MLP's act(gate) * up)."""


@dataclass(kw_only=True)
class Add(Op):
    """Elementwise sum of two values (residual), or of a value and a parameter
    (learned positional embedding)."""


@dataclass(kw_only=True)
class Cat(Op):
    """``torch.cat(args, dim)``: along the features, or class tokens prepended
    along the sequence."""

    dim: int


@dataclass(kw_only=True)
class Param(Op):
    """A parameter used directly in ``forward`` (positional embedding, class token)."""

    tensor: Named

    def params(self) -> Iterator[Named]:
        return iter((self.tensor,))


@dataclass(kw_only=True)
class Positions(Op):
    """``torch.arange`` token positions (the input of a positional nn.Embedding)."""


@dataclass
class Proj:
    """One projection of an attention layer: rows ``row0 : row0 + n`` of
    ``weight`` and entries ``bias0 : bias0 + n`` of ``bias`` (offsets are
    non-zero in packed q/k/v parameters); columns instead of rows when the
    weight is stored [in, out] (``transposed``)."""

    weight: Named
    n: int
    row0: int = 0
    bias: Named | None = None
    bias0: int = 0
    transposed: bool = False

    @property
    def inputs(self) -> int:
        return self.weight[1].size(0 if self.transposed else 1)

    def matrix(self) -> Tensor:
        """[n, inputs]: the projection's rows (a view)."""
        w = self.weight[1]
        return w[:, self.row0:self.row0 + self.n].T if self.transposed else w[self.row0:self.row0 + self.n]


@dataclass
class Rotary:
    """Rotary position embedding of the queries and keys: in every head, dims
    ``pairs[p] = (i, j)`` rotate by the angle ``freq[p] * t`` at token t,
    q_i -> q_i cos - q_j sin and q_j -> q_j cos + q_i sin."""

    pairs: Tensor  # [P, 2] long
    freq: Tensor  # [P] float64


@dataclass(kw_only=True)
class Attention(Op):
    """Multi-head scaled dot-product attention, args (query, key, value source):
    head i computes softmax(scale * (x W_q[i] + b)(x W_k[g(i)] + b)^T) (x W_v[g(i)] + b)
    and the output projection W_o maps the concatenated heads back. With
    grouped-query attention ``kv_heads`` < ``heads`` key/value heads serve
    heads / kv_heads consecutive query heads each (g(i) = i // (heads / kv_heads));
    else g(i) = i. ``rotary`` rotates q and k by token position first."""

    heads: int
    q: Proj
    k: Proj
    v: Proj
    o: Proj
    scale: float
    causal: bool = False
    kv_heads: int | None = None
    rotary: Rotary | None = None

    @property
    def groups(self) -> int:
        """Key/value heads."""
        return self.kv_heads or self.heads

    def params(self) -> Iterator[Named]:
        seen: dict[str, Tensor] = {}
        for p in (self.q, self.k, self.v, self.o):
            for kt in (p.weight, p.bias):
                if kt is not None:
                    seen.setdefault(kt[0], kt[1])
        return iter(seen.items())


@dataclass
class Program:
    """Operations in execution order and the value the network returns;
    ``consts``: state_dict entries kept as they are (a causal-mask buffer)."""

    ops: list[Op] = field(default_factory=list)
    output: int = -1
    num_values: int = 0
    consts: dict[str, Tensor] = field(default_factory=dict)

    def emit(self, op: Op) -> int:
        op.out = self.num_values
        self.num_values += 1
        self.ops.append(op)
        return op.out

    def is_chain(self) -> bool:
        """One input, then unary operations each reading the previous one's output."""
        first, rest = self.ops[0], self.ops[1:]
        return isinstance(first, Input) and self.output == self.ops[-1].out and all(
            op.args == (prev.out,) for prev, op in zip(self.ops, rest))


def join(name: str, child: str) -> str:
    """The path of ``child`` inside the module at ``name`` ('' at the top)."""
    return f"{name}.{child}" if name else child


def tag(name: str, role: str) -> str:
    """The name of the ``role`` nodes an op named ``name`` makes (``'q'`` at the top)."""
    return f"{name}:{role}" if name else role
