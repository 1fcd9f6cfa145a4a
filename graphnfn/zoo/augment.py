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

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from graphnfn.modules import Sine

PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: between two parameter layers, these keep the neuron correspondence (elementwise or per channel) ...
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.Flatten, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, Sine)
#: ... and these also commute with a sign flip (odd or linear maps)
ODD = (Sine, nn.Tanh, nn.Dropout, nn.Identity, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)


def chain_layers(module: nn.Module) -> list[tuple[str, bool]]:
    """The parameter layers of a chain, in order, as (state_dict prefix, whether
    everything up to the next parameter layer is odd, so its signs may flip).

    Raises ``TypeError`` for anything that is not a chain this module can
    augment (attention, norms, grouped convolutions, ...)."""
    layers: list[list] = []
    for name, m in module.named_modules():
        if list(m.children()):
            continue
        if isinstance(m, PARAM_LAYERS):
            if getattr(m, "groups", 1) != 1:
                raise TypeError(f"weight augmentation: grouped convolution {name!r} is not supported")
            layers.append([name, False, True])  # prefix, saw an activation, all odd so far
        elif not isinstance(m, PASS_THROUGH):
            raise TypeError(f"weight augmentation handles chains of Linear/Conv layers; {name!r} is a "
                            f"{type(m).__name__} (module {type(module).__name__})")
        elif layers:
            layers[-1][1] |= isinstance(m, (Sine, nn.Tanh))
            layers[-1][2] &= isinstance(m, ODD)
    return [(name, act and odd) for name, act, odd in layers]


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
            first = f"{layers[0][0]}.weight"
            shape = tuple(out[first].shape)
            need = "two coordinates" if self.dihedral else f"coordinate {self.mirror}"
            if len(shape) != 2 or (shape[1] != 2 if self.dihedral else not 0 <= self.mirror < shape[1]):
                raise TypeError(f"weight augmentation: {'dihedral' if self.dihedral else f'mirror={self.mirror}'} "
                                f"needs a first Linear layer that reads {need} (an INR of an image); "
                                f"{first} has shape {shape}")
            view = self.draw_view(shape[1], gen)
            if view is not None:
                out[first] = view.weights(out[first])
        for (name, odd), (nxt, _) in zip(layers[:-1], layers[1:]):
            w, b, w_next = f"{name}.weight", f"{name}.bias", f"{nxt}.weight"
            n = out[w].size(0)
            if out[w_next].size(1) != n:
                raise TypeError(f"weight augmentation: {w_next} takes {out[w_next].size(1)} inputs but {name} has "
                                f"{n} outputs (a spatial flatten?); only chains with matching widths are supported")
            if self.permute:
                perm = torch.randperm(n, generator=gen)
                out[w], out[w_next] = out[w][perm], out[w_next][:, perm]
                if b in out:
                    out[b] = out[b][perm]
            if self.sign_flip and odd:
                sign = torch.randint(0, 2, (n,), generator=gen).to(out[w].dtype) * 2 - 1
                out[w] = out[w] * sign.view(-1, *[1] * (out[w].dim() - 1))
                out[w_next] = out[w_next] * sign.view(1, -1, *[1] * (out[w_next].dim() - 2))
                if b in out:
                    out[b] = out[b] * sign
        for key, value in out.items():
            if self.noise > 0 and value.numel() > 1:
                value = value + self.noise * value.std() * torch.randn(value.shape, generator=gen, dtype=value.dtype)
            if self.dropout > 0:
                keep = (torch.rand(value.shape, generator=gen) >= self.dropout).to(value.dtype)
                value = value * keep / (1 - self.dropout)
            out[key] = value
        return out, view
