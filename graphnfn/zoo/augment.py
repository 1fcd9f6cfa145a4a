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

One changes the function the way an image augmentation changes an image: ``mirror``
(INRs of images only) negates, for a random half of the networks, the first layer's weights
on one input coordinate, W_1[:, c] <- -W_1[:, c], so that the INR draws its image mirrored
along that axis: f(..., -x_c, ...). An exact edit of the function, for targets a mirror
leaves alone (the class of a garment).
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
class WeightAugment:
    """Random weight-space augmentation of a chain network's state_dict.

    ``augment(module, state_dict, gen)`` returns a new state_dict; ``module``
    only tells the layer order and activations."""

    permute: bool = False
    sign_flip: bool = False
    noise: float = 0.0
    dropout: float = 0.0
    mirror: int | None = None  # the input coordinate to mirror (INRs on (row, column) grids: 1, left-right)

    def __call__(self, module: nn.Module, state: Mapping[str, Tensor],
                 gen: torch.Generator | None = None) -> dict[str, Tensor]:
        layers = chain_layers(module)
        out = dict(state)
        if self.mirror is not None:
            first = f"{layers[0][0]}.weight"
            if out[first].dim() != 2 or not 0 <= self.mirror < out[first].size(1):
                raise TypeError(f"weight augmentation: mirror={self.mirror} needs a first Linear layer that reads "
                                f"coordinates (an INR); {first} has shape {tuple(out[first].shape)}")
            if torch.rand((), generator=gen) < 0.5:
                w = out[first].clone()
                w[:, self.mirror] = -w[:, self.mirror]
                out[first] = w
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
        return out
