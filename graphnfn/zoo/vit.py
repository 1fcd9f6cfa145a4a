"""Small vision transformers in the style of the Small Transformer Zoo (Transformer-NFN).

Width 32, 2 heads, 2 pre-norm blocks, MLP ratio 2, a class token and learned
positional embeddings. Every piece is its own module so the transformer
converter sees plain layers: per block separate ``q``, ``k``, ``v``, ``o``
``nn.Linear`` (no biases, as in the published zoo and the Transformer-NFN
weight space), ``norm1``/``norm2`` LayerNorms, ``mlp`` = Sequential(Linear,
ReLU, Linear), residual connections around attention and MLP; a Conv2d
patch embedding (kernel = stride = patch).

Hyperparameter space from the published zoo's sweep (vision_task configs):
optimizer, learning rate, weight init std, L2, training fraction, dropout.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .classifier_training import choice


class Attention(nn.Module):
    """Multi-head self-attention; x [B, T, D] -> [B, T, D].

    Head h uses rows ``h*d:(h+1)*d`` of q/k/v's weights ([D, D], out x in) and
    columns ``h*d:(h+1)*d`` of o's weight, d = D / heads."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, dim = x.shape

        def split(y: Tensor) -> Tensor:  # [B, T, D] -> [B, heads, T, d]
            return y.view(b, t, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, dim))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """images [B, C, H, W] -> logits [B, num_classes].

    ``patch_embed`` is a Conv2d with kernel = stride = ``patch`` (the published
    zoo's patch encoding; the transformer converter reads it as a Linear on
    flattened patches); its N = (H/p)(W/p) outputs become tokens in row-major
    patch order, the class token is prepended, ``pos_embed`` [1, 1 + N, D] added;
    the head reads the class token after the final norm."""

    def __init__(self, image_size: int, patch: int, in_channels: int = 1, num_classes: int = 10, dim: int = 32,
                 heads: int = 2, depth: int = 2, mlp_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.patch = patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def make_vit(image_size: int, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0,
             patch: int | None = None) -> ViT:
    """The zoo's ViT; patch 2 on 8x8 digits, 4 on 28x28 (as the published zoo), else 4."""
    return ViT(image_size, patch or (2 if image_size <= 16 else 4), in_channels, num_classes, dropout=dropout)


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


def l2_params(model: nn.Module) -> list[Tensor]:
    """Every weight matrix (Linear and patch-embedding weights), as the published zoo's L2 on weights."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
