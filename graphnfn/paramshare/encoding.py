"""The input encoding of the parameter-sharing models: the graph models' Gaussian Fourier
features (:class:`graphnfn.fourier.FourierFeatures`, weights with the edge encoder's
frequencies, biases with the node encoder's) of every weight, bias and kernel entry, as the
first layer, so that both model families can see the same inputs.

Which encodings keep a model equivariant. The encoding phi: R -> R^E acts on each scalar
entry alone and turns its C channels into C * E. A group element moves entries around (a
permutation) and, under the monomial groups, multiplies all channels of an entry by one
number d (d_j / d_k for weight entry (j, k), d_j for bias entry j); every later layer
expects the encoded entry to transform the same way, so equivariance needs

    phi(d s) = d phi(s)    for every d the group uses.

* Permutations only (NFN NP/HNP, NFT, stat, flat-mlp): d = 1, any phi works; the full
  features [s, sin(2 pi b s), cos(2 pi b s)] (E = 1 + 2F).
* Sign flips (Monomial-NFN / MAGEP-NFN on sine and tanh networks): d = +-1, so phi must be
  odd. s and sin(2 pi b s) are; cos is even (a flipped entry would keep its cos channels
  while the next layer expects them flipped), so only [s, sin(2 pi b s)] (E = 1 + F).
* Positive scalings (ReLU networks): phi(d s) = d phi(s) for every d > 0 makes phi
  positively homogeneous: phi(s) = a s for s > 0 and c s for s < 0, a combination of s and
  |s|. No frequency survives (sin(2 pi b d s) != d sin(2 pi b s)), and the first monomial
  layer with its ReLU already forms such combinations, so Fourier encoding is refused.
* Transformer-NFN: the attention fields are acted on by invertible maps that mix entries
  (W_q[i] -> W_q[i] A_i); an entrywise phi commutes with every such A only if it is linear.
  Only the MLP fields (acted on by permutations) are encoded; the attention fields keep
  their values in the first C channels and zeros in the others, a linear map.
"""
from __future__ import annotations

from torch import Tensor, nn

from graphnfn.fourier import BIAS_SEED, WEIGHT_SEED, FourierFeatures

from ..spaces import AttentionSpec, AttentionWeightSpace, Spec, WeightSpace


class FourierEncoding(nn.Module):
    """Fourier-encode every entry of a ``channels``-channel space of ``spec`` with ``n_freq``
    frequencies (b ~ N(0, ``sigma``^2), fixed seeds), keeping the model's group.

    Args:
        spec: a WeightSpaceSpec, or an AttentionSpec.
        channels: C of the input space.
        n_freq: F >= 1.
        scaling: the group's action on hidden neurons: "none" (permutations: full features),
            "sign" (odd features only) or "scale" (refused: no Fourier encoding commutes).
        linear_attention: an AttentionSpec's attention fields (q/k/v/o) keep their values, zero
            padded, and only the MLP fields are encoded: what Transformer-NFN's group needs. False
            (models whose group only permutes entries, such as ``stat``): every field is encoded.

    Shapes: weights [B, C, n_out, n_in, *kernel] -> [B, C * E, n_out, n_in, *kernel] (every
    kernel entry on its own), biases [B, C, n] -> [B, C * E, n], E = :attr:`expansion`;
    attention fields [B, C, ...] -> [B, C * E, ...] zero-padded.
    ``description`` names the encoding for tables ("fourier16", "odd-fourier16 (sign group)",
    "fourier16 on MLP fields").
    """

    def __init__(self, spec: Spec, channels: int, n_freq: int, sigma: float = 3.0, scaling: str = "none",
                 linear_attention: bool = True):
        super().__init__()
        if n_freq < 1:
            raise ValueError(f"FourierEncoding: n_freq must be >= 1, got {n_freq}")
        if scaling == "scale":
            raise ValueError(f"FourierEncoding: fourier={n_freq} with the positive-scaling group (ReLU networks): "
                             "an entrywise encoding phi commutes with s -> d s for every d > 0 only if "
                             "phi(d s) = d phi(s), i.e. phi combines s and |s|, so no Fourier feature keeps the "
                             "model equivariant; use fourier=0")
        if scaling not in ("none", "sign"):
            raise ValueError(f"FourierEncoding: scaling must be 'none', 'sign' or 'scale', got {scaling!r}")
        odd = scaling == "sign"
        self.weight_features = FourierFeatures(n_freq, sigma, seed=WEIGHT_SEED, odd=odd)
        self.bias_features = FourierFeatures(n_freq, sigma, seed=BIAS_SEED, odd=odd)
        self.linear_attention = isinstance(spec, AttentionSpec) and linear_attention
        self.expansion = self.weight_features.expansion
        self.out_channels = channels * self.expansion
        self.description = (f"{'odd-' if odd else ''}fourier{n_freq}{' on MLP fields' if self.linear_attention else ''}"
                            f"{' (sign group)' if odd else ''}")

    @staticmethod
    def _encode(t: Tensor, features: FourierFeatures) -> Tensor:
        return features(t.movedim(1, -1)).movedim(-1, 1)

    def _pad(self, t: Tensor) -> Tensor:
        return nn.functional.pad(t.movedim(1, -1), (0, self.out_channels - t.shape[1])).movedim(-1, 1)

    def forward(self, space: WeightSpace | AttentionWeightSpace) -> WeightSpace | AttentionWeightSpace:
        w, b = self.weight_features, self.bias_features
        if isinstance(space, WeightSpace):
            return space._replace(weights=tuple(self._encode(t, w) for t in space.weights),
                                  biases=tuple(self._encode(t, b) for t in space.biases))
        linear = ("query", "key", "value", "out") if self.linear_attention else ()

        def field(name: str, ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            if name in linear:
                return tuple(self._pad(t) for t in ts)
            return tuple(self._encode(t, b if name.endswith("bias") else w) for t in ts)
        return AttentionWeightSpace(*(field(name, ts) for name, ts in zip(AttentionWeightSpace._fields, space)))
