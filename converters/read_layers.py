"""Leaf modules -> one operation each: Linear, Conv, BatchNorm, LayerNorm,
Embedding, activations, pooling, Flatten (Dropout and Identity pass through)."""
from __future__ import annotations

from torch import Tensor, nn

from graphnfn.graph import PADDING_MODES, Activation

from .activations import MODULE_ACTS, module_activation
from .errors import UnsupportedModuleError
from .program import Act, Flatten, Layer, Named, Op, Pool

SKIP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
POOL_MODULES = {
    nn.MaxPool1d: "max",
    nn.MaxPool2d: "max",
    nn.AvgPool1d: "avg",
    nn.AvgPool2d: "avg",
    nn.AdaptiveMaxPool1d: "max",
    nn.AdaptiveMaxPool2d: "max",
    nn.AdaptiveAvgPool1d: "avg",
    nn.AdaptiveAvgPool2d: "avg",
}
_PARAM_LEAVES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Embedding,
                 nn.Flatten, *SKIP_MODULES)


def plain(module: nn.Module, base: type | tuple[type, ...]) -> bool:
    """``isinstance(module, base)`` with the base class's own ``forward``: a
    subclass that overrides ``forward`` (weight standardisation, a scaled
    output) computes something else and must not be read as the base layer."""
    bases = base if isinstance(base, tuple) else (base,)
    return any(isinstance(module, b) and type(module).forward is b.forward for b in bases)


def prod(v) -> int:
    out = 1
    for s in (v if isinstance(v, (tuple, list)) else (v,)):
        out *= int(s)
    return out


def _pair(v, h: int = 1) -> tuple[int, int]:
    """(h, w) of a conv setting; a 1-D conv gets ``h`` (1 for sizes, 0 for padding)."""
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return (h, int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def adaptive_positions(output_size, two_d: bool, label: str) -> int:
    """Spatial positions left by adaptive pooling (1: global pooling)."""
    dims = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * (2 if two_d else 1)
    if any(d is None for d in dims):
        # the positions left would depend on the input size, which the graph does not know
        raise UnsupportedModuleError(f"{label}: adaptive pooling to {output_size} keeps a dim of the input (None); "
                                     "only a fixed output size is supported")
    return prod(dims)


def pool_size(kernel, two_d: bool) -> int:
    """Window size of a pooling kernel (an int kernel of a 2-D pool is square)."""
    return prod(kernel) ** (2 if two_d and isinstance(kernel, int) else 1)


def module_tensors(module: nn.Module, name: str, roles: tuple[str, ...]) -> dict[str, Named]:
    """role -> (state_dict key, tensor) for the roles the module has."""
    prefix = f"{name}." if name else ""
    own = module.state_dict(keep_vars=True)
    for r in roles:
        if r not in own and isinstance(getattr(module, r, None), Tensor):
            # weight_norm / spectral_norm / parametrize: the state_dict holds what the weight is computed from
            raise UnsupportedModuleError(
                f"{prefix + r} is computed from {sorted(prefix + k for k in own)} (weight_norm, spectral_norm or "
                "a parametrization): fold it into a plain parameter first "
                "(torch.nn.utils.parametrize.remove_parametrizations)")
    return {r: (prefix + r, own[r].detach()) for r in roles if own.get(r) is not None}


def conv_geometry(kernel_size, stride, padding, dilation, groups: int, padding_mode: str,
                  label: str) -> dict[str, object]:
    """The ``geometry`` of a conv :class:`Layer` from its settings (ints, tuples, or "same"/"valid" padding)."""
    if padding_mode not in PADDING_MODES:
        raise UnsupportedModuleError(f"{label}: padding_mode {padding_mode!r} is not supported")
    padding = (-1, -1) if padding == "same" else (0, 0) if padding == "valid" else _pair(padding, 0)
    # stride = kernel > 1 without padding or dilation: the conv cuts its input into patches
    patches = _pair(stride) == _pair(kernel_size) and padding == (0, 0) and _pair(dilation) == (1, 1) \
        and prod(kernel_size) > 1 and groups == 1
    return {"stride": _pair(stride), "padding": padding, "dilation": _pair(dilation),
            "padding_mode": PADDING_MODES.index(padding_mode), "patches": patches, "groups": groups}


def leaf_op(module: nn.Module, name: str, x: int) -> Op | None:
    """The operation of a module that :func:`is_leaf` accepts, reading value ``x``; None
    for modules that pass their input on unchanged (Dropout, Identity)."""
    label = name or type(module).__name__
    if isinstance(module, nn.Linear):
        return Layer(args=(x,), name=name, kind="linear", tensors=module_tensors(module, name, ("weight", "bias")))
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return Layer(args=(x,), name=name, kind="conv", tensors=module_tensors(module, name, ("weight", "bias")),
                     geometry=conv_geometry(module.kernel_size, module.stride, module.padding, module.dilation,
                                            module.groups, module.padding_mode, name))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        roles = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        return Layer(args=(x,), name=name, kind="batch_norm", tensors=module_tensors(module, name, roles),
                     geometry={"num_features": module.num_features})
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise UnsupportedModuleError(f"{label}: LayerNorm over {tuple(module.normalized_shape)} (several dims) is not supported")
        return Layer(args=(x,), name=name, kind="layer_norm", tensors=module_tensors(module, name, ("weight", "bias")),
                     geometry={"num_features": module.normalized_shape[0]})
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise UnsupportedModuleError(f"{label}: Embedding(max_norm=...) rewrites its weights in forward; not supported")
        return Layer(args=(x,), name=name, kind="embedding", tensors=module_tensors(module, name, ("weight",)))
    act = module_activation(module)
    if act is not None:
        if act[0] in (Activation.SOFTMAX, Activation.LOG_SOFTMAX) and module.dim not in (1, -1):
            raise UnsupportedModuleError(f"{label}: softmax over dim {module.dim} is not over neurons")
        return Act(args=(x,), name=name, kind=act[0], param=act[1])
    if isinstance(module, SKIP_MODULES):
        return None
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedModuleError(f"{label}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return Flatten(args=(x,), name=name)
    kind = POOL_MODULES[type(module)]
    two_d = type(module).__name__.endswith("2d")
    if getattr(module, "return_indices", False):
        raise UnsupportedModuleError(f"{label}: pooling with return_indices=True returns a tuple, not a feature map")
    if "Adaptive" in type(module).__name__:
        positions = adaptive_positions(module.output_size, two_d, label)
        return Pool(args=(x,), name=name, kind=kind, size=-positions, positions=positions)
    return Pool(args=(x,), name=name, kind=kind, size=pool_size(module.kernel_size, two_d))


def is_leaf(module: nn.Module) -> bool:
    """Whether :func:`leaf_op` converts this module (activations and pools by exact
    type, the others also as subclasses that keep the layer's ``forward``)."""
    return type(module) in MODULE_ACTS or type(module) in POOL_MODULES or plain(module, _PARAM_LEAVES)
