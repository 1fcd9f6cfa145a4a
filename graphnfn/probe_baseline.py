"""A sanity baseline for models given probe features: what the network computes on the probe
inputs, and nothing of its weights.

Probe features (:class:`graphnfn.features.ProbeFeatures`) hand a graph model every neuron's
activation on fixed inputs; for an INR the output neurons' activations on a coordinate grid
are the image it encodes, rendered at the grid. :class:`ProbeMLP` reads only those outputs,
so a graph model with probe features that does not beat it has learnt nothing from the
weights that rendering the network would not give.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from .features import ProbeFeatures
from .graph import NODE_COL, NeuralGraph, NodeType
from .models import graph_index, probe_activations
from .nn.aggregate import scatter_sum
from .nn.blocks import mlp


class ProbeMLP(nn.Module):
    """An MLP on each network's outputs at the probe inputs: [B, max_outputs * P] -> [B, d_out].

    Output neuron k of a graph fills columns k * P ... (k + 1) * P - 1 (its ``position``);
    networks with fewer outputs leave the rest 0. Permutations and sign flips of hidden
    neurons do not change a network's outputs, so the baseline is invariant to both.

    Args:
        d_out: outputs per graph.
        probe: the probe inputs (:class:`graphnfn.features.ProbeFeatures`); required.
        d_hidden: the MLP's hidden width.
        max_outputs: the most output neurons a network may have.
        dropout: drops the MLP's hidden units while training.
    """

    def __init__(self, d_out: int, probe: ProbeFeatures | None, d_hidden: int = 128, max_outputs: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        if probe is None:
            raise ValueError("probe-mlp reads the networks' outputs on probe inputs: pass probe_inputs "
                             "(experiments: MLP/INR zoos give it a coordinate grid)")
        self.probe, self.max_outputs = probe, max_outputs
        self.head = mlp(max_outputs * probe.n_probes, d_out, d_hidden, dropout)

    def rendered(self, data: NeuralGraph | Batch) -> Tensor:
        """[B, max_outputs * P]: each network's output neurons on the probe inputs (the run is
        on the unscaled weights: :func:`graphnfn.models.probe_activations`)."""
        acts = probe_activations(self.probe, data, self.probe.probes.dtype)
        batch, num_graphs = graph_index(data)
        pos = data.x[:, NODE_COL["position"]].long()
        is_output = data.node_type == NodeType.OUTPUT
        torch._assert_async((~is_output | (pos < self.max_outputs)).all(),
                            f"a network has more than max_outputs={self.max_outputs} outputs")
        slots = num_graphs * self.max_outputs  # every other node goes to one discarded slot (no boolean indexing)
        where = torch.where(is_output, batch * self.max_outputs + pos.clamp(0, self.max_outputs - 1), slots)
        return scatter_sum(acts, where, slots + 1)[:slots].reshape(num_graphs, -1)

    def forward(self, data: NeuralGraph | Batch) -> Tensor:
        return self.head(self.rendered(data).to(self.head[0].weight.dtype))
