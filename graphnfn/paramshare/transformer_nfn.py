"""Transformer-NFN layers (Tran et al., "Equivariant Neural Functional Networks for
Transformers", 2025) on :class:`~.attention_space.AttentionWeightSpace`.

Group, per block (row-vector convention of the weight space): a permutation tau of the
h heads, an invertible A_i (d_k x d_k) and C_i (d_v x d_v) per head, a permutation pi of
the D_a MLP hidden neurons:

    W_q[i] -> W_q[tau(i)] A_i        W_k[i] -> W_k[tau(i)] A_i^{-T}
    W_v[i] -> W_v[tau(i)] C_i        W_o[i] -> C_i^{-1} W_o[tau(i)]
    W_a -> W_a[:, pi]   b_a -> b_a[pi]   W_b -> W_b[pi, :]   b_b -> b_b

It leaves the block's function unchanged: W_q[i] W_k[i]^T and W_v[i] W_o[i] are invariant.
The model dim D is not acted on (residual stream and LayerNorm fix it).

Equivariant layer (derived from the group; same terms as the paper except where noted):

* W_q', W_k', W_v': a learned D x D map on the left of each head's matrix, shared by the
  heads (a linear map into a GL(d_k)-space can only come from the same head's W_q, since the
  standard and dual representations of GL are not isomorphic and head permutations tie the
  heads); W_o': a learned D x D map on the right. The paper restricts W_o' to identity plus a
  mean over D, because it also permutes D; here D is fixed, so the full map is allowed.
* MLP part: the block's MLP is a 2-layer weight space D -> D_a -> D whose only symmetry is pi,
  so it gets the complete HNP layer (:class:`~.equivariant_linear.EquivariantLinear`), and the
  attention enters through its invariants: sum_i W_q[i] W_k[i]^T and sum_i W_v[i] W_o[i]
  (D x D each), flattened and compressed to ``summary`` features by a learned linear map,
  which join the HNP layer's broadcast terms. (The paper contracts them with full D x D(x D)
  weights; the bottleneck keeps the parameter count at O(c^2 D^2).)

Between layers a pointwise nonlinearity may only touch the MLP part: an entrywise function
does not commute with A and C (:class:`MLPActivation`, as in the paper's code).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..spaces import AttentionSpec, AttentionWeightSpace, WeightSpace, WeightSpaceSpec, check_spec
from .equivariant_linear import EquivariantLinear
from .pooling import HNPPool
from .symmetry import HNP


def mlp_spec(spec: AttentionSpec, block: int) -> WeightSpaceSpec:
    """The block's MLP as an MLP weight space (column-vector convention): D -> D_a -> D."""
    b = spec.block(block)
    return WeightSpaceSpec(((b.d_mlp, b.dim), (b.dim, b.d_mlp)), ((b.d_mlp,), (b.dim,)))


def mlp_space(ws: AttentionWeightSpace, block: int) -> WeightSpace:
    """Block ``block``'s MLP weights as a WeightSpace (weights transposed to [n_out, n_in])."""
    return WeightSpace((ws.mlp_in[block].transpose(-1, -2), ws.mlp_out[block].transpose(-1, -2)),
                       (ws.mlp_in_bias[block], ws.mlp_out_bias[block]))


def attention_invariants(ws: AttentionWeightSpace, block: int) -> Tensor:
    """mean_i W_q[i] W_k[i]^T and mean_i W_v[i] W_o[i] per channel, flattened: [B, C * 2 D^2]."""
    qk = torch.einsum("bchdk,bchek->bcde", ws.query[block], ws.key[block]) / ws.query[block].shape[2]
    vo = torch.einsum("bchdv,bchve->bcde", ws.value[block], ws.out[block]) / ws.value[block].shape[2]
    return torch.cat([qk.flatten(1), vo.flatten(1)], dim=1)


class TransformerNFNLinear(nn.Module):
    """Transformer-NFN equivariant layer.

    Shapes: AttentionWeightSpace with ``in_channels`` channels (see
    :mod:`.attention_space`) -> the same spec with ``out_channels``.
    """

    def __init__(self, spec: AttentionSpec, in_channels: int, out_channels: int, summary: int | None = None):
        super().__init__()
        self.spec = AttentionSpec(*spec).validate()
        self.in_channels, self.out_channels = in_channels, out_channels
        summary = summary or out_channels
        self.left = nn.ParameterList()  # q, k, v maps per block: [3, c_out, c_in, D, D]
        self.right = nn.ParameterList()  # o map per block: [c_out, c_in, D, D]
        self.summaries = nn.ModuleList()
        self.mlps = nn.ModuleList()
        for i in range(self.spec.num_blocks):
            dim = self.spec.block(i).dim
            bound = (in_channels * dim) ** -0.5
            self.left.append(nn.Parameter(torch.empty(3, out_channels, in_channels, dim, dim).uniform_(-bound, bound)))
            self.right.append(nn.Parameter(torch.empty(out_channels, in_channels, dim, dim).uniform_(-bound, bound)))
            self.summaries.append(nn.Linear(in_channels * 2 * dim * dim, summary))
            self.mlps.append(EquivariantLinear(mlp_spec(self.spec, i), in_channels, out_channels, HNP,
                                               invariant_features=summary))

    def forward(self, ws: AttentionWeightSpace) -> AttentionWeightSpace:
        check_spec(ws, self.spec, type(self).__name__)
        if ws.num_channels != self.in_channels:
            raise ValueError(f"TransformerNFNLinear: expected {self.in_channels} channels, got {ws.num_channels}")
        fields: list[list[Tensor]] = [[] for _ in range(8)]
        for i in range(self.spec.num_blocks):
            for f, (x, m) in enumerate(zip((ws.query[i], ws.key[i], ws.value[i]), self.left[i])):
                fields[f].append(torch.einsum("ocde,bchek->bohdk", m, x))
            fields[3].append(torch.einsum("bchve,oced->bohvd", ws.out[i], self.right[i]))
            mlp = self.mlps[i](mlp_space(ws, i), self.summaries[i](attention_invariants(ws, i)))
            fields[4].append(mlp.weights[0].transpose(-1, -2))
            fields[5].append(mlp.biases[0])
            fields[6].append(mlp.weights[1].transpose(-1, -2))
            fields[7].append(mlp.biases[1])
        return AttentionWeightSpace(*(tuple(f) for f in fields))


class TransformerNFNInvariant(nn.Module):
    """Transformer-NFN invariant features: per block the attention invariants
    (mean_i W_q[i] W_k[i]^T, mean_i W_v[i] W_o[i]) and the HNP pool of the MLP.

    Shapes: ``channels``-channel AttentionWeightSpace -> [B, num_features].
    """

    def __init__(self, spec: AttentionSpec, channels: int):
        super().__init__()
        self.spec = AttentionSpec(*spec).validate()
        self.pools = nn.ModuleList(HNPPool(mlp_spec(self.spec, i), channels) for i in range(self.spec.num_blocks))
        self.num_features = sum(channels * 2 * self.spec.block(i).dim ** 2 + pool.num_features
                                for i, pool in enumerate(self.pools))

    def forward(self, ws: AttentionWeightSpace) -> Tensor:
        check_spec(ws, self.spec, type(self).__name__)
        return torch.cat([torch.cat([attention_invariants(ws, i), pool(mlp_space(ws, i))], dim=1)
                          for i, pool in enumerate(self.pools)], dim=1)


class MLPActivation(nn.Module):
    """A pointwise nonlinearity on the MLP fields only (attention fields pass unchanged)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, ws: AttentionWeightSpace) -> AttentionWeightSpace:
        return AttentionWeightSpace(*ws[:4], *(tuple(self.fn(t) for t in field) for field in ws[4:]))
