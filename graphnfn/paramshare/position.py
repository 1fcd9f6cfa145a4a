"""Learned position embeddings for weight spaces (NFN's io-embedding, NFT's layer and
input/output embeddings).

Adding one learned vector per layer to every entry of that layer's weights and biases
commutes with all neuron permutations. Adding one learned vector per input neuron to the
columns of the first weight, and one per output neuron to the rows of the last weight and
to the last bias, tells the input and output neurons apart: the result is equivariant to
the hidden-neuron permutations only (HNP), which is what lets an NP layer see positions.
"""
from __future__ import annotations

import torch
from torch import nn

from ..spaces import WeightSpace, WeightSpaceSpec


class PositionEmbedding(nn.Module):
    """Add learned layer embeddings and (``io=True``) input/output neuron embeddings.

    Shapes: weights [B, channels, n_out, n_in, *kernel], biases [B, channels, n_out] -> same.
    """

    def __init__(self, spec: WeightSpaceSpec, channels: int, io: bool = True):
        super().__init__()
        self.spec = WeightSpaceSpec(*spec).validate()
        kernels = [s[2:] for s in self.spec.weight_shapes]
        self.weight_layer = nn.ParameterList(nn.Parameter(torch.randn(channels, *k)) for k in kernels)
        self.bias_layer = nn.Parameter(torch.randn(self.spec.num_layers, channels))
        self.io = io
        if io:
            n = self.spec.neurons
            self.inputs = nn.Parameter(torch.randn(channels, n[0], *kernels[0]))
            self.outputs = nn.Parameter(torch.randn(channels, n[-1], *kernels[-1]))
            self.output_bias = nn.Parameter(torch.randn(channels, n[-1]))

    def forward(self, ws: WeightSpace) -> WeightSpace:
        weights = [w + e.unsqueeze(1).unsqueeze(1) for w, e in zip(ws.weights, self.weight_layer)]
        biases = [b + e[:, None] for b, e in zip(ws.biases, self.bias_layer)]
        if self.io:
            weights[0] = weights[0] + self.inputs.unsqueeze(1)
            weights[-1] = weights[-1] + self.outputs.unsqueeze(2)
            biases[-1] = biases[-1] + self.output_bias
        return WeightSpace(tuple(weights), tuple(biases))
