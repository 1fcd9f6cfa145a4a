"""Plain torch modules that graphnfn networks use and the converters recognise."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Sine(nn.Module):
    """``sin(w0 * x)``, the SIREN activation (Sitzmann et al., 2020)."""

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


class SelfAttention(nn.Module):
    """Multi-head self-attention as ViT/GPT code writes it, x [B, T, D] -> [B, T, D]:
    one packed ``qkv`` Linear (or separate ``q``, ``k``, ``v``) and an output ``o``.

    Head h uses rows ``h*d:(h+1)*d`` of q's, k's and v's weights (of each third
    of qkv's) and columns ``h*d:(h+1)*d`` of o's, d = D / heads."""

    def __init__(self, dim: int, heads: int, packed: bool = True, bias: bool = True, causal: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.packed, self.causal = heads, packed, causal
        self.scale = (dim // heads) ** -0.5
        if packed:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q, self.k, self.v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.o = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        if self.packed:
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            logits = logits.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return self.o((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x));
    ``mlp`` = Sequential(Linear(D, mlp_dim), activation, Linear(mlp_dim, D))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int | None = None, activation: type[nn.Module] = nn.GELU,
                 dropout: float = 0.0, packed: bool = True, attn_bias: bool = True, causal: bool = False):
        super().__init__()
        mlp_dim = mlp_dim or 4 * dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, packed=packed, bias=attn_bias, causal=causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), activation(), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Vision transformer -> logits [B, num_classes].

    ``patch_embed="conv"`` reads images [B, C, H, W] through a Conv2d with
    kernel = stride = ``patch``, its N = (H/p)(W/p) outputs becoming tokens in
    row-major patch order; ``"linear"`` reads flattened patches [B, N, C p p].
    The class token is prepended, ``pos_embed`` [1, 1 + N, D] added, then
    ``depth`` :class:`Block` s and a final norm; the head reads the class token
    (``readout="cls"``) or the mean over tokens (``"mean"``)."""

    def __init__(self, image_size: int, patch: int, in_channels: int = 3, num_classes: int = 10, dim: int = 32,
                 heads: int = 2, depth: int = 2, mlp_dim: int | None = None, activation: type[nn.Module] = nn.GELU,
                 dropout: float = 0.0, patch_embed: str = "conv", packed: bool = True, attn_bias: bool = True,
                 readout: str = "cls"):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.patch, self.readout, self.conv = patch, readout, patch_embed == "conv"
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch) if self.conv \
            else nn.Linear(in_channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_dim, activation, dropout, packed, attn_bias)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        if self.conv:
            x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.readout == "cls" else x.mean(dim=1))
