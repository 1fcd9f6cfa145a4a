"""Reference architectures the converters are tested, benchmarked and
demonstrated on, written here (no torchvision, no downloaded weights):

* :class:`ResNet` with torchvision's layout and state_dict keys
  (:func:`resnet18` is ResNet-18, 11.7M parameters at 1000 classes);
* :class:`GPT`: token and position embeddings, causal blocks, a language-model head.

The ViT, and the transformer block GPT is made of, are
:class:`graphnfn.modules.ViT` and :class:`graphnfn.modules.Block` (the zoos'
ViTs are the same class).

Their ``forward`` is plain PyTorch: :func:`converters.to_graph` reads them
through torch.fx like any user model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from graphnfn.modules import Block


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
