"""Converting a zoo of one architecture once: the rest is copying.

Every network of a zoo with one architecture converts to the same graph (or weight
space) up to the values of its parameters, but a conversion traces the module and
wires every neuron again (about 5 ms for a 2-32-32-1 SIREN, minutes for a 70k zoo, for
every model and seed of a comparison). :class:`ConversionTemplates` converts the first
network of each architecture twice: as it is (the template) and as a float64 copy whose
parameter and buffer entries are replaced by distinct markers (2**40 + their position),
which shows where each entry lands. Any other network of that architecture is the
template with its entries copied into those places, bit for bit what the conversion
gives, since converters store parameter values as they are.

That last point is checked, not assumed: the second network of each architecture is
converted both ways and compared (every tensor, every other field), and an
architecture that does not match, or whose parameters hold NaN or Inf (the converters
raise on those), is converted in full.
"""
from __future__ import annotations

import copy
from typing import Callable, Generic, TypeVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from graphnfn.graph import NeuralGraph

T = TypeVar("T")
MARK = 2.0**40  # far from every value a converter writes itself (positions, kernel sizes, one-hots)


def _values(module: nn.Module) -> Tensor:
    """Every floating parameter and buffer entry of ``module``, in state_dict order, as float64."""
    return torch.cat([t.detach().reshape(-1).double() for t in module.state_dict().values() if t.is_floating_point()])


def _tensors(obj) -> list:
    """The leaves of a conversion: a graph's attributes, or a weight space's pytree leaves."""
    if isinstance(obj, NeuralGraph):
        return [obj[k] for k in sorted(obj.keys())]
    return tree_flatten(obj)[0]


def _replaced(obj, leaves: list):
    """``obj`` with ``_tensors(obj)`` replaced by ``leaves``."""
    if isinstance(obj, NeuralGraph):
        out = copy.copy(obj)
        for k, v in zip(sorted(obj.keys()), leaves):
            out[k] = v
        return out
    return tree_unflatten(leaves, tree_flatten(obj)[1])


def _same(a, b) -> bool:
    la, lb = _tensors(a), _tensors(b)
    return len(la) == len(lb) and all(
        (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dtype == y.dtype and x.shape == y.shape
         and torch.equal(x, y)) or (not isinstance(x, Tensor) and not isinstance(y, Tensor) and x == y)
        for x, y in zip(la, lb))


class _Template:
    """One architecture's conversion, and for each floating leaf where its entries go."""

    def __init__(self, convert: Callable[[nn.Module], T], module: nn.Module):
        self.converted = convert(module)
        marked = copy.deepcopy(module).double()
        n = 0
        with torch.no_grad():
            for t in marked.state_dict().values():
                if t.is_floating_point():
                    t.copy_(MARK + torch.arange(n, n + t.numel(), dtype=torch.float64).reshape(t.shape))
                    n += t.numel()
        # where each leaf holds a marker: (mask, the entry's position)
        self.places = []
        for leaf in _tensors(convert(marked)):
            if isinstance(leaf, Tensor) and leaf.is_floating_point():
                offset = leaf - MARK
                mask = (offset >= 0) & (offset < n) & (offset == offset.round())
                self.places.append((mask, offset[mask].long()) if bool(mask.any()) else None)
            else:
                self.places.append(None)
        self.checked = False

    def fill(self, module: nn.Module) -> T | None:
        """``module`` converted by copying its entries into (a copy of) the template; None where
        they are not all finite (the full conversion says what is wrong)."""
        values = _values(module)
        if not bool(torch.isfinite(values).all()):
            return None
        leaves = []
        for leaf, place in zip(_tensors(self.converted), self.places):
            if isinstance(leaf, Tensor):
                leaf = leaf.clone()  # fresh tensors, as a conversion gives
                if place is not None:
                    leaf[place[0]] = values[place[1]].to(leaf.dtype)
            leaves.append(leaf)
        return _replaced(self.converted, leaves)


class ConversionTemplates(Generic[T]):
    """``convert`` (``converters.to_graph``, ``to_weight_space``, ...) for many modules,
    converting in full only the first of each architecture (as it is and marked) and, to
    check the copying against, the second.

    ``templates(key, module)``: ``key`` names the module's architecture (equal keys, equal
    architectures: the zoo's record ``arch``)."""

    def __init__(self, convert: Callable[[nn.Module], T]):
        self.convert = convert
        self.templates: dict[str, _Template | None] = {}  # None: this architecture converts in full

    def __call__(self, key: str, module: nn.Module) -> T:
        if key not in self.templates:  # the template is this module's own conversion
            self.templates[key] = template = _Template(self.convert, module)
            return template.fill(module)
        template = self.templates[key]
        filled = template.fill(module) if template is not None else None
        if filled is None:
            return self.convert(module)
        if not template.checked:
            template.checked = True
            full = self.convert(module)
            if not _same(filled, full):
                self.templates[key] = None
                return full
        return filled
