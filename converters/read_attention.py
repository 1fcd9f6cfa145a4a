"""Attention layers -> :class:`~converters.program.Attention` operations.

Three sources: ``nn.MultiheadAttention`` (packed ``in_proj_weight`` or
separate ``q/k/v_proj_weight``), ``nn.TransformerEncoderLayer`` /
``nn.TransformerEncoder`` (whose computation torch documents, so it is
emitted directly), and hand-written attention modules as in ViT/GPT code: a
module with a head count (``num_heads``, ``n_head``, ...) and q, k, v, o
``nn.Linear`` projections (separate, or one packed ``qkv``). A hand-written
module is converted only after checking numerically, in float64 on a copy,
that its ``forward`` is plain scaled dot-product attention with those
weights (with or without a causal mask); rotary embeddings, grouped-query
attention and any other variant are refused, never approximated.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import Tensor, nn

from .activations import function_activation, module_activation
from .errors import UnsupportedModuleError
from .program import Act, Add, Attention, Program, Proj, join
from .read_layers import SKIP_MODULES, leaf_op, module_tensors

HEAD_ATTRS = ("num_heads", "n_heads", "n_head", "heads", "nhead", "num_attention_heads")
KV_HEAD_ATTRS = ("num_kv_heads", "n_kv_heads", "n_kv_head", "num_key_value_heads", "kv_heads", "num_kv_groups")
Q_NAMES = ("q", "q_proj", "query", "to_q", "wq", "q_lin")
K_NAMES = ("k", "k_proj", "key", "to_k", "wk", "k_lin")
V_NAMES = ("v", "v_proj", "value", "to_v", "wv", "v_lin")
QKV_NAMES = ("qkv", "to_qkv", "c_attn", "qkv_proj", "Wqkv", "in_proj")
O_NAMES = ("o", "o_proj", "out", "out_proj", "proj", "to_out", "wo", "c_proj", "out_lin")
ROTARY_HINTS = ("rotary", "rope", "inv_freq", "freqs_cis", "cos_cached", "sin_cached")


# ---- nn.MultiheadAttention and the encoder layers --------------------------------

def mha(prog: Program, m: nn.MultiheadAttention, name: str, q: int, k: int, v: int, causal: bool = False) -> int:
    """Emit ``m(q, k, v)``; returns the value of its attention output."""
    label = name or "MultiheadAttention"
    if m.bias_k is not None or m.add_zero_attn:
        raise UnsupportedModuleError(f"{label}: MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
    e, h = m.embed_dim, m.num_heads
    t = module_tensors(m, name, ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"))
    bias = t.get("in_proj_bias")
    if m._qkv_same_embed_dim:
        packed = t["in_proj_weight"]
        qp, kp, vp = (Proj(packed, e, i * e, bias, i * e) for i in range(3))
    else:
        qp, kp, vp = (Proj(t[f"{r}_proj_weight"], e, 0, bias, i * e) for i, r in enumerate("qkv"))
    o = module_tensors(m.out_proj, join(name, "out_proj"), ("weight", "bias"))
    op = Attention(args=(q, k, v), name=name, heads=h, q=qp, k=kp, v=vp,
                   o=Proj(o["weight"], e, 0, o.get("bias")), scale=(e // h) ** -0.5, causal=causal)
    return prog.emit(op)


def _emit_leaf(prog: Program, module: nn.Module, name: str, x: int) -> int:
    op = leaf_op(module, name, x)
    return x if op is None else prog.emit(op)


def encoder_layer(prog: Program, layer: nn.TransformerEncoderLayer, name: str, x: int, causal: bool = False) -> int:
    """Emit ``nn.TransformerEncoderLayer`` as torch defines it (dropout is the identity in eval)."""
    fn = layer.activation
    act = module_activation(fn) if isinstance(fn, nn.Module) else function_activation(fn)
    if act is None:
        raise UnsupportedModuleError(f"{name or 'TransformerEncoderLayer'}: activation {fn} is not supported")

    def leaf(child: str, v: int) -> int:
        return _emit_leaf(prog, getattr(layer, child), join(name, child), v)

    def attn(v: int) -> int:
        return mha(prog, layer.self_attn, join(name, "self_attn"), v, v, v, causal)

    def mlp(v: int) -> int:
        hidden = prog.emit(Act(args=(leaf("linear1", v),), name=join(name, "activation"), kind=act[0], param=act[1]))
        return leaf("linear2", hidden)

    def add(a: int, b: int, tag: str) -> int:
        return prog.emit(Add(args=(a, b), name=join(name, tag)))

    if layer.norm_first:
        x = add(x, attn(leaf("norm1", x)), "residual_attn")
        return add(x, mlp(leaf("norm2", x)), "residual_mlp")
    x = leaf("norm1", add(x, attn(x), "residual_attn"))
    return leaf("norm2", add(x, mlp(x), "residual_mlp"))


def encoder(prog: Program, enc: nn.TransformerEncoder, name: str, x: int, causal: bool = False) -> int:
    for i, layer in enumerate(enc.layers):
        x = encoder_layer(prog, layer, join(name, f"layers.{i}"), x, causal)
    return x if enc.norm is None else _emit_leaf(prog, enc.norm, join(name, "norm"), x)


# ---- hand-written attention modules --------------------------------------------

def _head_count(m: nn.Module, attrs=HEAD_ATTRS) -> int | None:
    for a in attrs:
        h = getattr(m, a, None)
        if isinstance(h, int) and not isinstance(h, bool) and h > 0:
            return h
    return None


def _linear(m: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Linear] | None:
    """The child projection named one of ``names``: a Linear, or a Sequential
    of a Linear and Dropouts (``to_out`` in some ViT code)."""
    for n in names:
        c = m._modules.get(n)
        if isinstance(c, nn.Linear):
            return n, c
        if isinstance(c, nn.Sequential) and len(c) and isinstance(c[0], nn.Linear) \
                and all(isinstance(s, SKIP_MODULES) for s in list(c)[1:]):
            return f"{n}.0", c[0]
    return None


def is_attention_module(m: nn.Module) -> bool:
    """Structure only: a head count, q/k/v (or packed qkv) and o Linear projections."""
    if type(m).__module__.startswith("torch.nn") or _head_count(m) is None or _linear(m, O_NAMES) is None:
        return False
    return _linear(m, QKV_NAMES) is not None or all(_linear(m, n) is not None for n in (Q_NAMES, K_NAMES, V_NAMES))


def _proj(m: nn.Module, name: str, found: tuple[str, nn.Linear], n: int | None = None, offset: int = 0) -> Proj:
    path, lin = found
    t = module_tensors(lin, join(name, path), ("weight", "bias"))
    return Proj(t["weight"], lin.out_features if n is None else n, offset, t.get("bias"), offset)


def _refuse_variants(m: nn.Module, label: str, heads: int) -> None:
    names = [n for n, _ in m.named_modules()] + [n for n, _ in m.named_buffers()] + list(vars(m))
    hint = next((n for n in names for h in ROTARY_HINTS if h in n.lower()), None)
    if hint is not None:
        raise UnsupportedModuleError(f"{label} ({type(m).__name__}): rotary position embeddings ({hint!r}) are not supported")
    kv = _head_count(m, KV_HEAD_ATTRS)
    q, k = _linear(m, Q_NAMES), _linear(m, K_NAMES)
    if (kv is not None and kv != heads) or (q and k and q[1].out_features != k[1].out_features):
        raise UnsupportedModuleError(
            f"{label} ({type(m).__name__}): grouped-query / multi-query attention (fewer key/value heads than "
            f"{heads} query heads) is not supported")


def _projections(m: nn.Module, name: str, label: str) -> tuple[Proj, Proj, Proj, Proj, set[str]]:
    """q, k, v, o projections and the child paths they use."""
    packed, o = _linear(m, QKV_NAMES), _linear(m, O_NAMES)
    if packed is not None:
        rows = packed[1].out_features
        if rows % 3:
            raise UnsupportedModuleError(f"{label}: packed projection {packed[0]!r} has {rows} outputs, not 3 equal q/k/v parts")
        q, k, v = (_proj(m, name, packed, rows // 3, i * rows // 3) for i in range(3))
        used = {packed[0], o[0]}
    else:
        found = [_linear(m, n) for n in (Q_NAMES, K_NAMES, V_NAMES)]
        q, k, v = (_proj(m, name, f) for f in found)
        used = {f[0] for f in found} | {o[0]}
    return q, k, v, _proj(m, name, o), used


def reference_attention(op: Attention, x: Tensor) -> Iterator[tuple[tuple[float, bool], Tensor]]:
    """((scale, causal), output) of ``op`` on self-attention input x [B, T, D]
    (float64) for each candidate of a hand-written module, lazily: the
    definition the module is checked against. ``op.scale`` is the first
    candidate scale, then 1/sqrt(d_k) and 1."""
    def proj(p: Proj, inp: Tensor) -> Tensor:
        w = p.weight[1][p.row0:p.row0 + p.n].to(inp.dtype)
        b = None if p.bias is None else p.bias[1][p.bias0:p.bias0 + p.n].to(inp.dtype)
        return torch.nn.functional.linear(inp, w, b)

    batch, tokens, _ = x.shape
    q, k, v = (proj(p, x).view(batch, tokens, op.heads, -1).transpose(1, 2) for p in (op.q, op.k, op.v))
    dots = q @ k.transpose(-1, -2)
    future = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(1)
    for scale in dict.fromkeys((op.scale, (op.q.n // op.heads) ** -0.5, 1.0)):
        for causal in (False, True):
            logits = (scale * dots).masked_fill(future, float("-inf")) if causal else scale * dots
            yield (scale, causal), proj(op.o, (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, -1))


def handwritten(prog: Program, m: nn.Module, name: str, x: int) -> int:
    """Emit a hand-written self-attention module reading value ``x``, after
    checking that it is plain multi-head attention (see the module docstring)."""
    label = name or type(m).__name__
    heads = _head_count(m)
    _refuse_variants(m, label, heads)
    q, k, v, o, used = _projections(m, name, label)
    extra = [n for n, _ in m.named_parameters() if n.rsplit(".", 1)[0] not in used]
    if extra:
        raise UnsupportedModuleError(
            f"{label}: parameter {join(name, extra[0])!r} is not part of the q/k/v/o projections "
            "(relative position biases and other attention variants are not supported)")
    if q.n % heads or v.n % heads or q.n != k.n:
        raise UnsupportedModuleError(f"{label}: q/k/v sizes {q.n}/{k.n}/{v.n} do not split into {heads} heads")
    d_in = q.weight[1].size(1)
    if k.weight[1].size(1) != d_in or v.weight[1].size(1) != d_in:
        raise UnsupportedModuleError(f"{label}: q, k and v read inputs of different sizes (cross-attention is not supported)")
    probe = torch.randn(2, 5, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    probe = probe.to(q.weight[1].device)
    twin = copy.deepcopy(m).double().eval()
    try:
        with torch.no_grad():
            got = twin(probe)
    except Exception as err:  # any failure of user code means we cannot check it
        raise UnsupportedModuleError(f"{label}: looks like attention but calling it on one input [2, 5, {d_in}] failed: {err}") from err
    got = got[0] if isinstance(got, (tuple, list)) else got
    scale = getattr(m, "scale", None)
    op = Attention(args=(x, x, x), name=name, heads=heads, q=q, k=k, v=v, o=o,
                   scale=scale if isinstance(scale, float) else (q.n // heads) ** -0.5)
    for (scale, causal), want in reference_attention(op, probe):
        if isinstance(got, Tensor) and got.shape == want.shape and torch.allclose(got, want, rtol=1e-7, atol=1e-9):
            op.scale, op.causal = scale, causal
            prog.consts.update({join(name, n): b.detach() for n, b in m.state_dict(keep_vars=True).items()
                                if n.rsplit(".", 1)[0] not in used})
            return prog.emit(op)
    raise UnsupportedModuleError(
        f"{label} ({type(m).__name__}): has q/k/v/o projections and {heads} heads but does not compute plain "
        "multi-head scaled dot-product attention with them (checked numerically); rotary or relative position "
        "embeddings, grouped-query attention and other variants are not supported")
