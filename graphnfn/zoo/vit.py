"""Small vision transformers in the style of the Small Transformer Zoo (Transformer-NFN).

A :class:`graphnfn.modules.ViT` of width 32, 2 heads, 2 pre-norm blocks, MLP
ratio 2, a class token and learned positional embeddings: per block separate
``q``, ``k``, ``v``, ``o`` ``nn.Linear`` (no biases, as in the published zoo
and the Transformer-NFN weight space), ``mlp`` = Sequential(Linear, ReLU,
Linear); a Conv2d patch embedding (kernel = stride = patch).

Hyperparameter space from the published zoo's sweep (vision_task configs):
optimizer, learning rate, weight init std, L2, training fraction, dropout.
"""
from __future__ import annotations

import torch
from torch import nn

from graphnfn.modules import ViT

from .classifier_training import choice


def make_vit(image_size: int, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0,
             patch: int | None = None) -> ViT:
    """The zoo's ViT; patch 2 on 8x8 digits, 4 on 28x28 (as the published zoo), else 4."""
    return ViT(image_size, patch or (2 if image_size <= 16 else 4), in_channels, num_classes, dim=32, heads=2, depth=2,
               mlp_dim=64, activation=nn.ReLU, dropout=dropout, packed=False, attn_bias=False)


def sample_hparams(gen: torch.Generator) -> dict:
    """One draw from the Small Transformer Zoo's sweep values."""
    return {
        "optimizer": choice(gen, ("sgd", "adam", "rmsprop")),
        "learning_rate": choice(gen, (3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2)),
        "init_std": choice(gen, (0.1, 0.2, 0.3, 0.4, 0.5)),
        "l2reg": choice(gen, (1e-8, 1e-7, 1e-6, 1e-4, 1e-2)),
        "train_fraction": choice(gen, (1.0, 0.9, 0.8, 0.7)),
        "dropout": choice(gen, (0.0, 0.05, 0.1, 0.15, 0.2)),
    }


@torch.no_grad()
def initialise(model: ViT, std: float, gen: torch.Generator) -> None:
    """Linear and patch-embedding weights N(0, std^2) (the sweep's w_init_std),
    biases zero; LayerNorms at identity; class token and positional embeddings N(0, 0.02^2)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=std, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
    nn.init.normal_(model.cls_token, std=0.02, generator=gen)
    nn.init.normal_(model.pos_embed, std=0.02, generator=gen)


def build(hparams: dict, image_size: int, in_channels: int, num_classes: int, gen: torch.Generator) -> ViT:
    model = make_vit(image_size, in_channels, num_classes, hparams["dropout"])
    initialise(model, hparams["init_std"], gen)
    return model
