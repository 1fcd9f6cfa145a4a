"""Neural Functional Transformer layers (Zhou et al., "Neural Functional Transformers", 2023):
NP-equivariant weight-space self-attention and cross-attention pooling.

NP attention. Every entry (weight, bias) projects its features to query/key/value
vectors (a separate projection per tensor, kernel entries folded into features). Then:

* Cross terms, one attention per neuron layer s: the tokens are the objects that carry an
  index of layer s -- the columns W_{s}[:, k] of the weight into layer s (one token per
  neuron k of layer s-1), the bias b_s (one token) and the rows W_{s+1}[l, :] of the weight
  out of layer s (one token per neuron l of layer s+1) -- each a vector indexed by the
  n_s neurons of layer s. Scores are dot products over (features, n_s), so permuting layer
  s leaves them alone; permuting layers s-1 or s+1 permutes the tokens, and attention is
  equivariant to that. Values keep the n_s index, so the output is equivariant too. Every
  weight entry gets the output of the two attentions it takes part in (as a column of layer
  s+1 and as a row of layer s), every bias one.
* Diagonal term: one attention among 2L tokens, the means of each tensor's q/k/v, whose
  output is broadcast back to every entry of that tensor.

The outputs are projected back per tensor. Equivariant to the NP group (all neuron layers
permuted); add :class:`~.position.PositionEmbedding` to tell inputs/outputs apart.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .elementwise import from_entries, tensor_kernels, to_entries
from ..spaces import WeightSpace, WeightSpaceSpec


def _heads(x: Tensor, heads: int) -> Tensor:
    """[B, C, T, n] -> [B, heads, T, (C / heads) * n]."""
    b, c, t, n = x.shape
    return x.reshape(b, heads, c // heads, t, n).transpose(2, 3).reshape(b, heads, t, -1)


def _unheads(x: Tensor, n: int) -> Tensor:
    """Inverse of :func:`_heads`: [B, heads, T, (C / heads) * n] -> [B, C, T, n]."""
    b, h, t, _ = x.shape
    return x.reshape(b, h, t, -1, n).transpose(2, 3).reshape(b, -1, t, n)


class NPAttention(nn.Module):
    """NFT self-attention over a weight space.

    Shapes: weights [B, channels, n_out, n_in, *kernel], biases [B, channels, n_out] -> same.
    ``channels`` must be divisible by ``heads``.
    """

    def __init__(self, spec: WeightSpaceSpec, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"NPAttention: channels ({channels}) must be divisible by heads ({heads})")
        self.spec = WeightSpaceSpec(*spec).validate()
        self.channels, self.heads = channels, heads
        self.kernels = tensor_kernels(self.spec)
        self.to_qkv = nn.ModuleList(nn.Linear(channels * math.prod(k), 3 * channels) for k in self.kernels)
        self.from_v = nn.ModuleList(nn.Linear(channels, channels * math.prod(k)) for k in self.kernels)

    def _project(self, ws: WeightSpace) -> list[Tensor]:
        """q|k|v of every tensor, channels first: [B, 3C, n_out(, n_in)]."""
        return [proj(to_entries(t, len(k))).movedim(-1, 1)
                for t, k, proj in zip((*ws.weights, *ws.biases), self.kernels, self.to_qkv)]

    def forward(self, ws: WeightSpace) -> WeightSpace:
        L = self.spec.num_layers
        qkv = self._project(ws)
        weights, biases = qkv[:L], qkv[L:]
        out_w = [torch.zeros_like(w[:, :self.channels]) for w in weights]
        out_b = [torch.zeros_like(b[:, :self.channels]) for b in biases]
        for s in range(L + 1):  # one attention per neuron layer
            groups = []  # (kind, layer, tokens [B, 3C, T, n_s])
            if s > 0:
                groups += [("col", s - 1, weights[s - 1].transpose(2, 3)), ("bias", s - 1, biases[s - 1].unsqueeze(2))]
            if s < L:
                groups.append(("row", s, weights[s]))
            tokens = torch.cat([g[2] for g in groups], dim=2)
            n = tokens.shape[-1]
            q, k, v = (_heads(x, self.heads) for x in tokens.chunk(3, dim=1))
            y = _unheads(F.scaled_dot_product_attention(q, k, v), n)
            for (kind, layer, part), y_part in zip(groups, y.split([g[2].shape[2] for g in groups], dim=2)):
                if kind == "col":
                    out_w[layer] = out_w[layer] + y_part.transpose(2, 3)
                elif kind == "bias":
                    out_b[layer] = out_b[layer] + y_part.squeeze(2)
                else:
                    out_w[layer] = out_w[layer] + y_part
        # diagonal term: attention among the per-tensor means
        means = torch.stack([x.flatten(2).mean(-1) for x in qkv], dim=2)  # [B, 3C, 2L]
        q, k, v = (_heads(x.unsqueeze(-1), self.heads) for x in means.chunk(3, dim=1))
        y = _unheads(F.scaled_dot_product_attention(q, k, v), 1).squeeze(-1)  # [B, C, 2L]
        outs = [o + y[:, :, i].reshape(*y.shape[:2], *(1,) * (o.dim() - 2))
                for i, o in enumerate(out_w + out_b)]
        tensors = [from_entries(proj(o.movedim(1, -1)), k) for o, k, proj in zip(outs, self.kernels, self.from_v)]
        return WeightSpace(tuple(tensors[:L]), tuple(tensors[L:]))


class AttentionPool(nn.Module):
    """NFT's invariant readout (the encoder of Inr2Array): ``latents`` learned queries
    cross-attend to all entries of the weight space (each tensor's entries projected to
    ``channels`` features by its own map). Invariant to any permutation of the entries
    within a tensor, hence to every neuron permutation.

    Shapes: ``channels``-channel WeightSpace -> [B, latents * channels].
    """

    def __init__(self, spec: WeightSpaceSpec, channels: int, latents: int = 4, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"AttentionPool: channels ({channels}) must be divisible by heads ({heads})")
        self.kernels = tensor_kernels(WeightSpaceSpec(*spec).validate())
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(latents, channels) / math.sqrt(channels))
        self.to_kv = nn.ModuleList(nn.Linear(channels * math.prod(k), 2 * channels) for k in self.kernels)
        self.num_features = latents * channels

    def forward(self, ws: WeightSpace) -> Tensor:
        kv = torch.cat([proj(to_entries(t, len(k))).flatten(1, -2)
                        for t, k, proj in zip((*ws.weights, *ws.biases), self.kernels, self.to_kv)], dim=1)
        b, n, _ = kv.shape
        k, v = (x.reshape(b, n, self.heads, -1).transpose(1, 2) for x in kv.chunk(2, dim=-1))
        q = self.queries.reshape(1, -1, self.heads, k.shape[-1]).transpose(1, 2).expand(b, -1, -1, -1)
        return F.scaled_dot_product_attention(q.to(k.dtype), k, v).transpose(1, 2).reshape(b, -1)
