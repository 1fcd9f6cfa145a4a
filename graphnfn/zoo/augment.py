"""Weight-space augmentations for chains of Linear/Conv layers (SIRENs, MLPs, the zoo CNNs).

Two are symmetries (the network computes exactly the same function):

* hidden-neuron permutation: for each hidden layer l a random permutation p of
  its neurons/channels, W_l <- W_l[p], b_l <- b_l[p], W_{l+1} <- W_{l+1}[:, p];
* sign flips, for layers followed by an odd activation (sine, tanh): a random
  s in {-1, 1}^n, W_l <- s W_l, b_l <- s b_l, W_{l+1} <- W_{l+1} s, since
  act(-z) = -act(z).

Two are perturbations, as in DWSNets' augmentations: Gaussian noise of
``noise`` times each tensor's standard deviation, and (inverted) dropout of
single weights and biases with probability ``dropout``.

One is a canonical form, not an augmentation: :func:`canonical_phase` (below) picks one
representative of a sine network's phase symmetry, for every split alike.

Two change the function the way an image augmentation changes an image (INRs of images
only): an :class:`ImageView` of the coordinates, f'(x) = f(S x) with S a signed permutation,
is W_1 <- W_1 S, exact. ``mirror`` negates, for a random half of the networks, one
coordinate's column, W_1[:, c] <- -W_1[:, c], so the INR draws its image mirrored along that
axis; ``dihedral`` draws one of the 8 symmetries of a square image (flips of either axis, and
a transposition: W_1's two columns swapped). A target drawn on the same grid must follow
(an editing target is the source image moved by :meth:`ImageView.image`, then edited:
:class:`graphnfn.zoo.loaders.EditedImages`); a class label stays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import torch
from torch import Tensor, nn

from graphnfn.modules import Sine

PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: between two parameter layers, these keep the neuron correspondence (elementwise or per channel) ...
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.Flatten, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, Sine)
#: ... and these also commute with a sign flip (odd or linear maps)
ODD = (Sine, nn.Tanh, nn.Dropout, nn.Identity, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)


class ChainLayer(NamedTuple):
    """A parameter layer of a chain: its state_dict ``prefix``; whether everything up to the next
    parameter layer is ``odd`` (so its neurons' signs may flip); and ``w0``, the frequency of the
    :class:`~graphnfn.modules.Sine` that reads its pre-activations first (None where none does)."""

    prefix: str
    odd: bool
    w0: float | None


def chain_layers(module: nn.Module) -> list[ChainLayer]:
    """The parameter layers of a chain, in order.

    Raises ``TypeError`` for anything that is not a chain this module can
    augment (attention, norms, grouped convolutions, ...)."""
    layers: list[list] = []
    for name, m in module.named_modules():
        if list(m.children()):
            continue
        if isinstance(m, PARAM_LAYERS):
            if getattr(m, "groups", 1) != 1:
                raise TypeError(f"weight augmentation: grouped convolution {name!r} is not supported")
            layers.append([name, False, True, None])  # prefix, saw an activation, all odd so far, sine's w0
        elif not isinstance(m, PASS_THROUGH):
            raise TypeError(f"weight augmentation handles chains of Linear/Conv layers; {name!r} is a "
                            f"{type(m).__name__} (module {type(module).__name__})")
        elif layers:
            if isinstance(m, Sine) and not layers[-1][1]:
                layers[-1][3] = m.w0
            layers[-1][1] |= isinstance(m, (Sine, nn.Tanh))
            layers[-1][2] &= isinstance(m, ODD)
    return [ChainLayer(name, act and odd, w0 if odd else None) for name, act, odd, w0 in layers]


def _outgoing(state: dict[str, Tensor], layer: ChainLayer, nxt: ChainLayer) -> tuple[str, int]:
    """(the key of the weight that reads ``layer``'s neurons, their number n); TypeError where
    ``nxt`` does not read them one to one (a spatial flatten)."""
    w_next, n = f"{nxt.prefix}.weight", state[f"{layer.prefix}.weight"].size(0)
    if state[w_next].size(1) != n:
        raise TypeError(f"weight augmentation: {w_next} takes {state[w_next].size(1)} inputs but {layer.prefix} has "
                        f"{n} outputs (a spatial flatten?); only chains with matching widths are supported")
    return w_next, n


def _signs(state: dict[str, Tensor], layer: ChainLayer, nxt: ChainLayer, sign: Tensor, incoming: bool) -> None:
    """Multiply (in ``state``) the outgoing weights of ``layer``'s neurons by ``sign`` [n], and
    with ``incoming`` their incoming weights and biases too (a sign flip)."""
    w_next, _ = _outgoing(state, layer, nxt)
    state[w_next] = state[w_next] * sign.view(1, -1, *[1] * (state[w_next].dim() - 2))
    if incoming:
        w, b = f"{layer.prefix}.weight", f"{layer.prefix}.bias"
        state[w] = state[w] * sign.view(-1, *[1] * (state[w].dim() - 1))
        if b in state:
            state[b] = state[b] * sign


def canonical_phase(module: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state_dict of the same function with every sine neuron's phase reduced to
    w0 * b in [-pi/2, pi/2].

    sin(w0 (z + b + pi / w0)) = -sin(w0 (z + b)): shifting a hidden neuron's bias by pi / w0
    and negating its outgoing weights keeps the function (two shifts are sine's period).
    Every neuron that a :class:`~graphnfn.modules.Sine` reads first (and whose outputs reach
    the next layer through odd maps only) gets b <- b - k pi / w0 with k = round(w0 b / pi),
    and its outgoing weights times (-1)^k; a network's last layer is left alone (its outputs
    are the function's). Two networks that differ by such shifts get the same state_dict, so a
    model reads one representative per function of this group; the sign flips that remain
    (b -> -b) keep the range, as ``round`` is odd (halves go to even), so the form commutes with
    sign flips and sign-equivariant models stay exact on it. Like every canonical form it is
    discontinuous where w0 b crosses an odd multiple of pi/2."""
    layers = chain_layers(module)
    out = dict(state)
    for layer, nxt in zip(layers[:-1], layers[1:]):
        b = f"{layer.prefix}.bias"
        if layer.w0 is None or b not in out:
            continue
        half = math.pi / layer.w0
        k = torch.round(out[b] / half)
        out[b] = out[b] - k * half
        _signs(out, layer, nxt, 1 - 2 * k.remainder(2), incoming=False)
    return out


@dataclass(frozen=True)
class ImageView:
    """An exact change of the image an INR draws on a grid symmetric about 0: f'(x) = f(S x),
    where S negates the coordinates k with ``flip[k]`` after exchanging the two coordinates
    if ``swap`` (2-D inputs only). On the network, W_1 <- W_1 S; on the image, the same pixels
    moved (a flip along axis k is x_k -> -x_k, a swap the transposition)."""

    flip: tuple[bool, ...]
    swap: bool = False

    def weights(self, w: Tensor) -> Tensor:
        """The first layer's weight [n, d] of the network that draws the moved image."""
        w = w * torch.tensor([-1.0 if f else 1.0 for f in self.flip], dtype=w.dtype, device=w.device)
        return w[:, [1, 0]] if self.swap else w

    def image(self, image: Tensor) -> Tensor:
        """An image [..., R, R] (d trailing grid axes, in coordinate order) moved as the INR's is."""
        dims = [k - len(self.flip) for k, f in enumerate(self.flip) if f]
        image = image.flip(dims) if dims else image
        return image.transpose(-1, -2) if self.swap else image


@dataclass(frozen=True)
class WeightAugment:
    """Random weight-space augmentation of a chain network's state_dict.

    ``augment(module, state_dict, gen)`` returns a new state_dict; ``module``
    only tells the layer order and activations. :meth:`apply` also returns the
    :class:`ImageView` drawn (``mirror`` / ``dihedral``), for targets that must follow it."""

    permute: bool = False
    sign_flip: bool = False
    noise: float = 0.0
    dropout: float = 0.0
    mirror: int | None = None  # the input coordinate to mirror (INRs on (row, column) grids: 1, left-right)
    dihedral: bool = False  # any of the 8 symmetries of a square image (2-D coordinates)

    def __post_init__(self):
        if self.mirror is not None and self.dihedral:
            raise ValueError("WeightAugment: dihedral already includes every mirror; give one of mirror and dihedral")

    def __call__(self, module: nn.Module, state: Mapping[str, Tensor],
                 gen: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.apply(module, state, gen)[0]

    def draw_view(self, inputs: int, gen: torch.Generator | None = None) -> ImageView | None:
        """The image view for a network of ``inputs`` coordinates; None: drawn as it is."""
        if self.dihedral:
            swap, *flip = (torch.randint(0, 2, (3,), generator=gen) == 1).tolist()
            return ImageView(tuple(flip), swap)
        if self.mirror is not None and torch.rand((), generator=gen) < 0.5:
            return ImageView(tuple(k == self.mirror for k in range(inputs)))
        return None

    def apply(self, module: nn.Module, state: Mapping[str, Tensor],
              gen: torch.Generator | None = None) -> tuple[dict[str, Tensor], ImageView | None]:
        """(the augmented state_dict, the :class:`ImageView` drawn or None)."""
        layers = chain_layers(module)
        out = dict(state)
        view = None
        if self.mirror is not None or self.dihedral:
            first = f"{layers[0].prefix}.weight"
            shape = tuple(out[first].shape)
            need = "two coordinates" if self.dihedral else f"coordinate {self.mirror}"
            if len(shape) != 2 or (shape[1] != 2 if self.dihedral else not 0 <= self.mirror < shape[1]):
                raise TypeError(f"weight augmentation: {'dihedral' if self.dihedral else f'mirror={self.mirror}'} "
                                f"needs a first Linear layer that reads {need} (an INR of an image); "
                                f"{first} has shape {shape}")
            view = self.draw_view(shape[1], gen)
            if view is not None:
                out[first] = view.weights(out[first])
        for layer, nxt in zip(layers[:-1], layers[1:]):
            w_next, n = _outgoing(out, layer, nxt)
            if self.permute:
                perm = torch.randperm(n, generator=gen)
                w, b = f"{layer.prefix}.weight", f"{layer.prefix}.bias"
                out[w], out[w_next] = out[w][perm], out[w_next][:, perm]
                if b in out:
                    out[b] = out[b][perm]
            if self.sign_flip and layer.odd:
                sign = torch.randint(0, 2, (n,), generator=gen).to(out[w_next].dtype) * 2 - 1
                _signs(out, layer, nxt, sign, incoming=True)
        for key, value in out.items():
            if self.noise > 0 and value.numel() > 1:
                value = value + self.noise * value.std() * torch.randn(value.shape, generator=gen, dtype=value.dtype)
            if self.dropout > 0:
                keep = (torch.rand(value.shape, generator=gen) >= self.dropout).to(value.dtype)
                value = value * keep / (1 - self.dropout)
            out[key] = value
        return out, view
