"""The Small CNN Zoo network and its hyperparameter space (Unterthiner et al., 2020).

Three 3x3 convolutions of 16 channels with stride 2, each followed by the
activation and dropout, global average pooling and a linear head: 4,970
parameters for grey images and 10 classes. The published zoo used Keras'
``valid`` padding on 28x28/32x32 inputs; our maker pads by 1 so the same network
also runs on 8x8 digits (8 -> 4 -> 2 -> 1); the parameter count is the same.
"""
from __future__ import annotations

import torch
from torch import nn

from .classifier_training import choice, log_uniform

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_cnn(in_channels: int = 1, num_classes: int = 10, activation: str = "relu", dropout: float = 0.0,
             channels: int = 16, layers: int = 3, padding: int = 1) -> nn.Sequential:
    """The Small CNN Zoo architecture as an ``nn.Sequential`` (what ``converters.to_graph`` reads)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"CNN activation {activation!r} not in {sorted(ACTIVATIONS)}")
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2, padding=padding),
                 ACTIVATIONS[activation](), nn.Dropout(dropout)]
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


INITS = {
    "glorot_normal": lambda w, std, gen: nn.init.xavier_normal_(w, generator=gen),
    "he_normal": lambda w, std, gen: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen),
    "orthogonal": lambda w, std, gen: nn.init.orthogonal_(w, generator=gen),
    "normal": lambda w, std, gen: nn.init.normal_(w, std=std, generator=gen),
    "truncated_normal": lambda w, std, gen: nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=gen),
}


@torch.no_grad()
def initialise(model: nn.Module, scheme: str, std: float, gen: torch.Generator) -> None:
    """Conv/Linear weights by ``scheme`` (Keras' names; ``normal`` and
    ``truncated_normal`` use ``std``), biases zero (the zoo's ``b_init``)."""
    if scheme not in INITS:
        raise ValueError(f"unknown initialisation {scheme!r}; expected one of {sorted(INITS)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            INITS[scheme](m.weight, std, gen)
            m.bias.zero_()


def sample_hparams(gen: torch.Generator) -> dict:
    """One draw from the Small CNN Zoo's hyperparameter space (its paper, Sec. 3)."""
    return {
        "activation": choice(gen, tuple(ACTIVATIONS)),
        "w_init": choice(gen, tuple(INITS)),
        "init_std": log_uniform(gen, 1e-3, 0.5),
        "learning_rate": log_uniform(gen, 5e-4, 5e-2),
        "optimizer": choice(gen, ("sgd", "adam", "rmsprop")),
        "l2reg": log_uniform(gen, 1e-8, 1e-2),
        "dropout": float(torch.rand((), generator=gen)) * 0.7,
        "train_fraction": choice(gen, (0.1, 0.25, 0.5, 1.0)),
    }


def build(hparams: dict, in_channels: int, num_classes: int, gen: torch.Generator) -> nn.Sequential:
    model = make_cnn(in_channels, num_classes, hparams["activation"], hparams["dropout"])
    initialise(model, hparams["w_init"], hparams["init_std"], gen)
    return model
