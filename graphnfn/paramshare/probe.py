"""Probe features for the parameter-sharing models: every neuron's activations on fixed probe
inputs, the graph models' :class:`graphnfn.features.ProbeFeatures`, as extra bias channels.

Why the bias channels keep every model equivariant. Hidden neuron j of layer s computes
a_j(x) = act(W[j, :] h(x) + b[j]) on probe input x. Under the groups the models respect,
a_j moves exactly as b[j] does:

* a permutation of the layer's neurons permutes a_j with b[j] (NP also permutes the
  input and output neurons: the outputs' values move with the output biases);
* a sign flip d_j = -1 of row j, b[j] and column j of the next weight (odd activations:
  tanh, sine) flips a_j, as it flips b[j];
* a positive scaling d_j > 0 (ReLU, leaky ReLU) scales a_j by d_j, as it scales b[j].

Output neurons give their pre-activations (logits), which carry the output biases'
character. So appending the activations of neuron layer s + 1 to bias tensor s as P more
channels gives a space every group element acts on as before; the weights get P zero
channels (fixed by every element), so the channel counts agree for the layers.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from graphnfn.execute import ACTIVATION_FNS, DEFAULT_ACT_PARAM, run_mlp

from ..spaces import WeightSpace, WeightSpaceSpec


def _activation(name: str, param: float | None, where: str):
    """The map of a hidden layer's activation record ("sine", "relu", ...) with its parameter."""
    kinds = {a.name.lower(): a for a in ACTIVATION_FNS}
    if name not in kinds and name != "identity":
        raise ValueError(f"{where}: probe features run the networks, but a hidden layer's activation is {name!r}; "
                         f"they need one of {sorted(kinds) + ['identity']}")
    if name == "identity":
        return lambda pre: pre
    kind = kinds[name]
    value = torch.tensor(DEFAULT_ACT_PARAM.get(kind, 0.0) if param is None else float(param))
    return lambda pre: ACTIVATION_FNS[kind](pre, value.to(pre))


class ProbeChannels(nn.Module):
    """``inner``'s output (the input encoding; None: the input as it is), with each neuron's
    activations on the P probe inputs appended to the biases as P channels and P zero channels
    appended to the weights.

    Args:
        spec: the MLP's WeightSpaceSpec (no kernel dims) with its hidden ``activations`` known.
        probes: [P, n_0] probe inputs (for INRs a coordinate grid).
        channels: C of the input space; only C = 1 (a network, not features) can be run.
        act_param: the hidden activations' parameter (SIREN's w0, leaky ReLU's slope), which a
            weight space does not record; None: the activation module's default
            (:data:`graphnfn.execute.DEFAULT_ACT_PARAM`: w0 30 as :class:`graphnfn.Sine`).
        scales: the :class:`graphnfn.training.WeightScaler` scales the inputs were divided by
            (keys ("weights", l), ("biases", l)); the network is run on the weights multiplied
            back, since a rescaled network computes another function. None: unscaled inputs.
        inner: a module mapping the space to ``inner.out_channels`` channels, or None.

    Shapes: weights [B, 1, n_{l+1}, n_l] -> [B, C' + P, n_{l+1}, n_l] (zeros in the last P),
    biases [B, 1, n_{l+1}] -> [B, C' + P, n_{l+1}], C' = ``inner.out_channels`` (1 without).
    """

    def __init__(self, spec: WeightSpaceSpec, probes: Tensor, channels: int = 1, act_param: float | None = None,
                 scales: dict | None = None, inner: nn.Module | None = None):
        super().__init__()
        where = "probe features"
        if not isinstance(spec, WeightSpaceSpec) or any(len(s) != 2 for s in spec.weight_shapes):
            raise ValueError(f"{where} run MLPs (weight spaces of Linear layers): got {spec}")
        if channels != 1:
            raise ValueError(f"{where} run the input network, a space of 1 channel: got {channels} channels")
        if probes.dim() != 2 or probes.size(1) != spec.neurons[0]:
            raise ValueError(f"{where}: probes must be [P, {spec.neurons[0]}] (the networks' inputs), "
                             f"got {tuple(probes.shape)}")
        if spec.activations is None:
            raise ValueError(f"{where} run the networks, but their hidden activations are unknown (a bare "
                             "state_dict): convert the modules, or give the spec its activations")
        self.acts = [_activation(a, act_param, where) for a in spec.activations]
        self.inner = inner
        self.register_buffer("probes", probes.detach().clone())
        layers = range(spec.num_layers)
        scales = scales or {}
        # non-persistent: the scales come with the model card, not its state_dict
        self.register_buffer("weight_scales", torch.tensor([float(scales.get(("weights", l), 1.0)) for l in layers]),
                             persistent=False)
        self.register_buffer("bias_scales", torch.tensor([float(scales.get(("biases", l), 1.0)) for l in layers]),
                             persistent=False)
        self.out_channels = (inner.out_channels if inner is not None else channels) + self.n_probes
        self.description = (inner.description if inner is not None else "raw") + f" + activations at {self.n_probes} probes"

    @property
    def n_probes(self) -> int:
        return self.probes.size(0)

    def activations(self, space: WeightSpace) -> list[Tensor]:
        """[B, P, n_{l+1}] for every layer l: hidden neurons after their activation, outputs before."""
        return run_mlp(self.probes.to(space.weights[0]),
                       [w[:, 0] * scale for w, scale in zip(space.weights, self.weight_scales)],
                       [b[:, 0] * scale for b, scale in zip(space.biases, self.bias_scales)], self.acts)

    def forward(self, space: WeightSpace) -> WeightSpace:
        acts = self.activations(space)
        encoded = self.inner(space) if self.inner is not None else space
        zeros = [w.new_zeros(w.size(0), self.n_probes, *w.shape[2:]) for w in encoded.weights]
        return encoded._replace(weights=tuple(torch.cat([w, z], 1) for w, z in zip(encoded.weights, zeros)),
                                biases=tuple(torch.cat([b, a.to(b)], 1) for b, a in zip(encoded.biases, acts)))


__all__ = ["ProbeChannels"]
