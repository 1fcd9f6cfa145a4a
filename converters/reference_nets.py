"""Reference architectures the converters are tested, benchmarked and
demonstrated on, written here (no torchvision, no downloaded weights):

* :class:`ResNet` with torchvision's layout and state_dict keys
  (:func:`resnet18` is ResNet-18, 11.7M parameters at 1000 classes);
* :class:`ViT`: patch embedding (Conv2d with stride = kernel, or Linear on
  flattened patches), class token, learned positional embedding, pre-norm
  blocks of hand-written multi-head attention and an MLP, a classification head;
* :class:`GPT`: token and position embeddings, causal blocks, a language-model head.

Their ``forward`` is plain PyTorch: :func:`converters.to_graph` reads them
through torch.fx like any user model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet of BasicBlocks; ``widths`` per stage, ``blocks`` per stage."""

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(c if j == 0 else w, w, 2 if i > 0 and j == 0 else 1) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.stages = len(widths)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet(num_classes=num_classes)


class SelfAttention(nn.Module):
    """Multi-head self-attention as ViT/GPT code writes it: a packed ``qkv``
    (or separate ``q``, ``k``, ``v``) Linear, a head count, an output ``proj``."""

    def __init__(self, dim: int, num_heads: int, packed: bool = True, bias: bool = True, causal: bool = False):
        super().__init__()
        self.num_heads, self.causal, self.packed = num_heads, causal, packed
        self.scale = (dim // num_heads) ** -0.5
        if packed:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q, self.k, self.v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        if self.packed:
            q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (f(x).view(b, t, self.num_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            logits = logits.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, packed: bool = True, causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, packed=packed, causal=causal)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer. ``patch_embed="conv"`` reads images [B, C, H, W];
    ``"linear"`` reads flattened patches [B, (H/P)(W/P), C P P]."""

    def __init__(self, image: int = 32, patch: int = 4, channels: int = 3, dim: int = 256, depth: int = 6,
                 heads: int = 8, mlp_ratio: float = 4.0, num_classes: int = 10, patch_embed: str = "conv",
                 packed: bool = True, readout: str = "cls"):
        super().__init__()
        self.readout = readout
        n = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch) if patch_embed == "conv" \
            else nn.Linear(channels * patch * patch, dim)
        self.conv = patch_embed == "conv"
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, packed) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        if self.conv:
            x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.readout == "cls" else x.mean(dim=1))


class GPT(nn.Module):
    """Decoder-only language model: token ids [B, T] -> logits [B, T, vocab]."""

    def __init__(self, vocab: int = 64, context: int = 16, dim: int = 32, depth: int = 2, heads: int = 4):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, causal=True) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.lm_head(self.ln_f(self.blocks(self.wte(idx) + self.wpe(pos))))
