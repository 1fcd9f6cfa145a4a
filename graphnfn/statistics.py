"""Per-tensor statistics of a network's parameters, the features of the ``stat`` baseline
(Unterthiner et al., "Predicting Neural Network Accuracy from Weights"), for both families:
:class:`graphnfn.paramshare.StatFeatures` reads them off weight spaces, :class:`TensorStatistics`
off neuron-graph batches, where a graph model can add them to its invariant readout.

Every statistic here is of a whole tensor's entries, so it is unchanged by any permutation of
them, and so by relabelling hidden neurons.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from .fourier import BIAS_SEED, WEIGHT_SEED, FourierFeatures
from .graph import EDGE_COL, NODE_COL, WEIGHT_COL, NeuralGraph

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: mean, variance (without Bessel's correction) and the quantiles above
STATS_PER_TENSOR = 2 + len(QUANTILES)
#: a distinct number per TensorStatistics of the process (an id() can be reused after collection)
_INSTANCES = itertools.count()
#: weight and bias tensors with a slot each in :class:`TensorStatistics` by default (a two-block
#: ViT of the transformer zoo has 21 weight tensors and 30 neuron groups)
MAX_TENSORS = 32
#: where :class:`TensorStatistics` keeps a batch's statistics (an underscored name: PyG keeps it
#: off the batch's data keys, so collation and ``.to()`` ignore it)
KEPT = "_tensor_statistics"


def kernel_mask(edge_attr: Tensor, edge_group: Tensor, k: int) -> Tensor:
    """[E, k] bool: the first ``k`` kernel columns of ``edge_attr`` [E, WEIGHT_COL + K] that hold a
    parameter: within each edge's true kernel (kernel_h x kernel_w; the rest is the batch's
    zero padding) of edges that carry one (``edge_group`` >= 0)."""
    true_size = (edge_attr[:, EDGE_COL["kernel_h"]] * edge_attr[:, EDGE_COL["kernel_w"]]).unsqueeze(1)
    return (torch.arange(k, device=edge_attr.device) < true_size) & (edge_group >= 0).unsqueeze(1)


def segment_stats(values: Tensor, key: Tensor, slots: int) -> Tensor:
    """values [M] or [M, C], key [M] in [0, slots) -> [slots, STATS_PER_TENSOR] (or [slots, C,
    STATS_PER_TENSOR]): the mean, the variance and the QUANTILES (linear interpolation, as
    :func:`torch.quantile`) of the values of each key, channel by channel; zeros for a key
    without values."""
    flat = values.dim() == 1
    values = values.unsqueeze(1) if flat else values
    count = torch.bincount(key, minlength=slots)
    mean = scatter(values, key, 0, slots, "mean")
    var = scatter((values - mean.index_select(0, key)).square(), key, 0, slots, "mean")
    if values.size(0) == 0:
        out = values.new_zeros(slots, values.size(1), STATS_PER_TENSOR)
        return out.squeeze(1) if flat else out
    rows = values.T.contiguous()  # [C, M]: sorting along contiguous rows is several times faster
    order = torch.argsort(rows, dim=1, stable=True)  # each channel by value ...
    order = order.gather(1, torch.argsort(key[order], dim=1, stable=True))  # ... then by key
    ordered = rows.gather(1, order)
    start = count.cumsum(0) - count
    pos = torch.tensor(QUANTILES, dtype=values.dtype, device=values.device) * (count - 1).clamp(min=0).unsqueeze(1)
    lo = pos.floor()
    frac = pos - lo
    last = values.size(0) - 1
    below = ordered[:, (start.unsqueeze(1) + lo.long()).clamp(max=last)].permute(1, 0, 2)  # [slots, C, Q]
    above = ordered[:, (start.unsqueeze(1) + pos.ceil().long()).clamp(max=last)].permute(1, 0, 2)
    quantiles = torch.where(count.view(-1, 1, 1) > 0, below + frac.unsqueeze(1) * (above - below), 0)
    out = torch.cat([mean.unsqueeze(2), var.unsqueeze(2), quantiles], 2)
    return out.squeeze(1) if flat else out


def forget_statistics(data: NeuralGraph | Batch) -> None:
    """Drop the statistics a :class:`TensorStatistics` kept on ``data``, so the next call computes
    them anew: for a batch whose tensors were changed where torch does not count it (through
    ``.data``, or by another process sharing their memory)."""
    setattr(data, KEPT, None)


class TensorStatistics(nn.Module):
    """The ``stat`` baseline's features of every network of a graph batch: per weight tensor
    (the kernel values of the edges of one ``edge_group``) and per bias tensor (the biases of
    the nodes of one ``node_group``), the mean, variance and 0/25/50/75/100 % quantiles.

    A graph's first ``max_tensors`` edge groups and node groups get a slot each (later ones
    share the last; a missing one is zeros). With ``fourier`` = F > 0, the statistics are of
    every value's Gaussian Fourier features, [v, sin(2 pi b_k v), cos(2 pi b_k v)] (the
    frequencies of :class:`graphnfn.fourier.FourierFeatures` with the seeds the encoders and
    the ``stat`` baseline use), channel by channel: exactly the features ``stat`` reads from
    the same encoding. No parameters.

    ``forward(data, x [N, F], edge_attr [E, WEIGHT_COL + K], batch [N], num_graphs)`` -> [B, width];
    ``x`` and ``edge_attr`` are passed apart from ``data`` so that a model can hand over what
    it reads (canonical forms, absolute values).

    The result is kept on the ``data`` object and returned again while that batch's tensors are
    the same, unchanged ones (no in-place edit, no move to another device) and nothing asks for
    their gradient: the statistics have no parameters, a training loop sees each fixed batch
    every pass, and sorting every value is most of a ViT step. A ``data`` of new tensors (an
    augmented pass, a scaled copy) is computed anew.
    """

    def __init__(self, max_tensors: int = MAX_TENSORS, fourier: int = 0, sigma: float = 3.0):
        super().__init__()
        if max_tensors < 1:
            raise ValueError(f"max_tensors must be >= 1, got {max_tensors}")
        self.max_tensors = max_tensors
        # not in state_dict: checkpoints from before the option still load
        self.weight_features = FourierFeatures(fourier, sigma, seed=WEIGHT_SEED, persistent=False)
        self.bias_features = FourierFeatures(fourier, sigma, seed=BIAS_SEED, persistent=False)
        self._instance = next(_INSTANCES)

    @property
    def width(self) -> int:
        """Features per graph."""
        return 2 * self.max_tensors * self.weight_features.expansion * STATS_PER_TENSOR

    def forward(self, data: NeuralGraph | Batch, x: Tensor, edge_attr: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        if x.requires_grad or edge_attr.requires_grad:
            return self._compute(data, x, edge_attr, batch, num_graphs)
        # the same batch object, tensors and dtype: the caller's (x, edge_attr) are the same function of them
        key = (self._instance, x.dtype, num_graphs, *((t.data_ptr(), t._version) for t in (
            data.x, data.edge_attr, data.edge_index, data.edge_group, data.node_group, batch)))
        cached = getattr(data, KEPT, None)
        if cached is None or cached[0] != key:
            cached = key, self._compute(data, x, edge_attr, batch, num_graphs)
            setattr(data, KEPT, cached)
        return cached[1]

    def _compute(self, data: NeuralGraph | Batch, x: Tensor, edge_attr: Tensor, batch: Tensor,
                 num_graphs: int) -> Tensor:
        slots, k = num_graphs * self.max_tensors, edge_attr.size(1) - WEIGHT_COL
        mask = kernel_mask(edge_attr, data.edge_group, k)
        edge_key = (batch.index_select(0, data.edge_index[0]) * self.max_tensors
                    + data.edge_group.clamp(0, self.max_tensors - 1))
        weights = segment_stats(self.weight_features(edge_attr[:, WEIGHT_COL:][mask].unsqueeze(1)),
                                edge_key.unsqueeze(1).expand(-1, k)[mask], slots)
        node_key = batch * self.max_tensors + data.node_group.clamp(max=self.max_tensors - 1)
        biases = segment_stats(self.bias_features(x[:, NODE_COL["bias"]].unsqueeze(1)), node_key, slots)
        return torch.cat([weights.reshape(num_graphs, -1), biases.reshape(num_graphs, -1)], 1)

    def extra_repr(self) -> str:
        return f"max_tensors={self.max_tensors}, fourier={self.weight_features.freq.numel()}"
