"""MAGEP-NFN polynomial layers (Vo et al., "Equivariant Polynomial Functional Networks", 2025),
derived here from the group and the paper's description (products of consecutive weights,
weight-bias and bias-weight terms); the authors' code was not consulted.

Group: hidden-neuron permutations times positive scalings or sign flips (the monomial
groups of :mod:`.symmetry`): W_l -> D_{l+1} P_{l+1} W_l P_l^T D_l^{-1}, b_l -> D_{l+1} P_{l+1} b_l,
with D_0 = P_0 = D_L = P_L = I.

Stable products. The inner factors cancel in a product of consecutive weights, so
W_{s-1} ... W_t transforms like a single weight from neuron layer t to s. Two families of
such products give everything below (W-bar: a weight summed over its kernel entries, which
transforms like a linear weight; each contraction over n neurons is scaled by 1/sqrt(n), a
constant that keeps magnitudes width-independent and does not touch equivariance):

    V_0 = I_{n_0},   V_{s+1} = [ W_s V_s | b_s ]          [n_s x (n_0 + s)]
    R_L = I_{n_L},   R_s     = R_{s+1} W_s                 [n_L x n_s]

V_s holds the input paths W_{s-1}...W_0 (n_0 columns) and the weight-bias products
W_{s-1}...W_t b_{t-1} (one column per earlier bias, the last one b_{s-1} itself); it
transforms as D_s P_s V_s. R_s holds the output paths W_{L-1}...W_s and transforms as
R_s P_s^T D_s^{-1}. At the fixed ends V_L and R_0 are invariant: V_L (which contains R_0) is
the invariant the readout uses.

Layer. Output weight l (neuron layer l -> l + 1) and bias l get, besides the linear
Monomial-NFN terms (:class:`~.equivariant_linear.MonomialLinear`),

    W'_l += V_{l+1} Theta_l R_l          (Theta_l: (n_0 + l + 1) x n_L, per channel pair and kernel entry)
    b'_l += (W_l V_l) theta_l            (l >= 1; theta_l: n_0 + l)

i.e. outer products of input-path / weight-bias / bias columns at layer l+1 with output-path
rows at layer l (degree >= 2: weight-weight, weight-bias and bias-weight terms), and the
weight-bias products into every bias. Each transforms exactly like the tensor it is added
to, for any D, so the layer is equivariant under both monomial groups. Products are taken
within a channel; Theta mixes channels.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .equivariant_linear import MonomialLinear
from ..spaces import WeightSpace, WeightSpaceSpec


def paths(ws: WeightSpace) -> tuple[list[Tensor], list[Tensor]]:
    """(V_0..V_L, R_0..R_L) of the module docstring, per channel:
    V_s [B, C, n_s, n_0 + s], R_s [B, C, n_L, n_s]."""
    flat = [w.sum(dim=tuple(range(4, w.dim()))) if w.dim() > 4 else w for w in ws.weights]
    b, c, _, n0 = flat[0].shape
    eye = torch.eye(n0, dtype=flat[0].dtype, device=flat[0].device).expand(b, c, n0, n0)
    V = [eye]
    for w, bias in zip(flat, ws.biases):
        V.append(torch.cat([w @ V[-1] / math.sqrt(w.shape[-1]), bias.unsqueeze(-1)], dim=-1))
    nL = flat[-1].shape[2]
    R = [torch.eye(nL, dtype=flat[0].dtype, device=flat[0].device).expand(b, c, nL, nL)]
    for w in reversed(flat):
        R.insert(0, R[0] @ w / math.sqrt(w.shape[-2]))
    return V, R


class MAGEPLayer(nn.Module):
    """A MAGEP-NFN polynomial layer: Monomial-NFN's linear layer plus the stable polynomial terms.

    Shapes: weights [B, in_channels, n_out, n_in, *kernel], biases [B, in_channels, n_out] ->
    the same with ``out_channels``. ``scaling``: "scale" (ReLU nets) or "sign" (sine/tanh nets).
    """

    def __init__(self, spec: WeightSpaceSpec, in_channels: int, out_channels: int, scaling: str = "scale"):
        super().__init__()
        self.linear = MonomialLinear(spec, in_channels, out_channels, scaling)
        spec = self.linear.layout.spec
        n = spec.neurons
        self.kernels = [s[2:] for s in spec.weight_shapes]
        self.theta_w = nn.ParameterList()
        self.theta_b = nn.ParameterList()
        for l in range(spec.num_layers):
            m = n[0] + l + 1
            self.theta_w.append(nn.Parameter(torch.randn(out_channels, in_channels, m, n[-1], math.prod(self.kernels[l]))
                                             / math.sqrt(in_channels * m * n[-1])))
            if l:
                self.theta_b.append(nn.Parameter(torch.randn(out_channels, in_channels, m - 1) / math.sqrt(in_channels * m)))

    def forward(self, ws: WeightSpace) -> WeightSpace:
        out = self.linear(ws)
        V, R = paths(ws)
        weights = [w + torch.einsum("bcjm,ocmnk,bcni->bojik", V[l + 1], theta, R[l]).reshape(w.shape)
                   for l, (w, theta) in enumerate(zip(out.weights, self.theta_w))]
        biases = [out.biases[0]] + [b + torch.einsum("bcjm,ocm->boj", V[l + 1][..., :-1], theta)
                                    for l, (b, theta) in enumerate(zip(out.biases[1:], self.theta_b), start=1)]
        return WeightSpace(tuple(weights), tuple(biases))


class PathInvariant(nn.Module):
    """MAGEP-NFN invariant features: V_L, the input paths W_{L-1}...W_0 and the weight-bias
    paths W_{L-1}...W_t b_{t-1} into the outputs, per channel.

    Shapes: ``channels``-channel WeightSpace -> [B, channels * n_L * (n_0 + L)].
    """

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__()
        n = spec.neurons
        self.num_features = channels * n[-1] * (n[0] + len(n) - 1)

    def forward(self, ws: WeightSpace) -> Tensor:
        return paths(ws)[0][-1].flatten(1)
