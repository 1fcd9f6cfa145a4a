"""Message passing equivariant to the sign flips of odd neurons, by construction.

A hidden neuron j whose activation is odd (sine, tanh) can flip sign: its bias b_j, its
incoming weights W[j, :] and its outgoing weights W[:, j] all change sign, and the network
computes the same function. With s_j = +-1 for every such neuron (s_j = 1 for the rest:
inputs, outputs, neurons next to a norm or a pooling), the group acts on a neuron graph as

    b_j -> s_j b_j,        w_ij -> s_i s_j w_ij     (edge i -> j).

The layers keep two kinds of state that transform the same way:

    h_j  [N, d]  -> s_j h_j          (node states: odd in their own neuron's sign)
    e_ij [E, d]  -> s_i s_j e_ij     (edge states: odd in each end's sign)

Derivation of the layer. A sum of terms that each transform with s_j is again such a term,
so sums and means over neighbours are equivariant, and so is any linear map without a bias
across the d channels (all channels of a node share its one sign). Products pair signs up:

    e_ij * h_i  -> (s_i s_j)(s_i) = s_j     (a message to j that carries i)
    h_i * h_j   -> s_i s_j                  (an edge term made of its two ends)

A nonlinearity f of a vector x that transforms with one sign t stays equivariant when f is
odd (f(-x) = -f(x)); any function splits into odd and even parts, (f(x) -+ f(-x)) / 2, the
even part being invariant. :class:`ParityMLP` computes that part of an ordinary two-layer
MLP at the cost of the MLP itself. Degree scalers and normalisation by the root mean square
over channels are invariant factors. Where the group does not act (s_j = 1 always), no
parity is needed and the plain MLP is used, which is what lets input and output neurons
carry position information. Permutations of neurons are handled as in any message-passing
layer: nothing depends on the order of nodes or edges.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .aggregate import scatter_sum
from .blocks import reset_children
from .pna import DEGREE_SCALERS, EdgePNAConv


def acted_edges(acted: Tensor, edge_index: Tensor) -> Tensor:
    """[E] bool: the edges a sign flip can reach (either end acted on), from ``acted`` [N] bool."""
    return acted.index_select(0, edge_index[0]) | acted.index_select(0, edge_index[1])


class ParityMLP(nn.Module):
    """A two-layer SiLU MLP f, taken as its odd (``parity=-1``: (f(x) - f(-x)) / 2) or even
    (``parity=+1``: (f(x) + f(-x)) / 2) part on the rows where the sign group acts, and as f
    on the rest.

    Both parts come from one product with each layer's weight: the first layer's
    pre-activation at -x is the negation of the one at x (before the bias), and the second
    layer is linear, so it is applied once to the mixed hidden state.

    x [R, d_in], acted [R] bool -> [R, d_out].
    """

    def __init__(self, d_in: int, d_out: int, d_hidden: int, parity: int):
        super().__init__()
        if parity not in (-1, 1):
            raise ValueError(f"parity must be -1 (odd) or +1 (even), got {parity}")
        self.parity = parity
        self.inp, self.out = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out)

    def forward(self, x: Tensor, acted: Tensor) -> Tensor:
        z = nn.functional.linear(x, self.inp.weight)
        at_x, at_minus_x = nn.functional.silu(z + self.inp.bias), nn.functional.silu(self.inp.bias - z)
        acted = acted.unsqueeze(1)
        hidden = torch.where(acted, (at_x + self.parity * at_minus_x) / 2, at_x)
        bias = torch.where(acted, self.out.bias * (1 + self.parity) / 2, self.out.bias)  # odd parts lose the bias
        return nn.functional.linear(hidden, self.out.weight) + bias


class SignRMSNorm(nn.Module):
    """x / RMS(x) over the channels, times a learned per-channel gain (no shift: a shift is
    not odd). x [R, d] -> [R, d]."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.weight


class SignEquivariantConv(nn.Module):
    """Message passing over both directions of a neuron graph, equivariant to node
    relabellings and to the sign flips of the nodes in ``acted`` (see the module docstring).

    m_ij (to j)  = (P_f e_ij) * (Q_f h_i)         m_ji (to i) = (P_b e_ij) * (Q_b h_j)
    a_j          = [mean of m_ij over i] * [1, log(deg+1) / delta, delta / log(deg+1)]
    h_j'         = h_j + odd_j(U)([n(h_j), a_fwd(j), a_bwd(j)])
    e_ij'        = e_ij + odd_ij(V)([n(e_ij), (A n(h_i')) * (B n(h_j'))])

    n: :class:`SignRMSNorm`; odd(U): a :class:`ParityMLP`, odd where the group acts on the
    node (on the edge: on either end), plain elsewhere; P, Q, A, B: linear maps without bias;
    delta: the mean log(deg+1) of the node's graph (PNA's degree scalers).

    Args:
        d: node and edge feature width.
        dropout: on the node and the edge update.
    """

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.edge_message = nn.Linear(d, 2 * d, bias=False)  # P_f, P_b
        self.node_message = nn.Linear(d, 2 * d, bias=False)  # Q_f, Q_b
        self.ends = nn.Linear(d, 2 * d, bias=False)  # A, B
        self.norm_h, self.norm_e, self.norm_edge_h = SignRMSNorm(d), SignRMSNorm(d), SignRMSNorm(d)
        self.update = ParityMLP(d + 2 * len(DEGREE_SCALERS) * d, d, 2 * d, parity=-1)
        self.edge_update = ParityMLP(2 * d, d, d, parity=-1)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, batch: Tensor, num_graphs: int | None = None,
                acted: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """h [N, d], edge_index [2, E], e [E, d], batch [N], acted [N] bool (the nodes the sign
        group acts on; None: every node) -> (h' [N, d], e' [E, d]). ``num_graphs``: B, read off
        ``batch`` (a device sync) when not given."""
        num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
        acted = torch.ones_like(batch, dtype=torch.bool) if acted is None else acted
        src, dst = edge_index
        d = h.size(1)
        hn, en = self.norm_h(h), self.norm_e(e)
        pe, qh = self.edge_message(en), self.node_message(hn)
        to_dst = pe[:, :d] * qh[:, :d].index_select(0, src)
        to_src = pe[:, d:] * qh[:, d:].index_select(0, dst)
        aggregated = [self._mean(m, index, scalers) for m, index, scalers in
                      zip((to_dst, to_src), (dst, src), EdgePNAConv.scalers(edge_index, batch, num_graphs, h.dtype))]
        h = h + self.dropout(self.update(torch.cat([hn, *aggregated], -1), acted))
        ends = self.ends(self.norm_edge_h(h))
        pair = ends[:, :d].index_select(0, src) * ends[:, d:].index_select(0, dst)
        e = e + self.dropout(self.edge_update(torch.cat([en, pair], -1), acted_edges(acted, edge_index)))
        return h, e

    @staticmethod
    def _mean(messages: Tensor, index: Tensor, scalers) -> Tensor:
        """messages [E, d] -> [N, len(DEGREE_SCALERS) d]: their mean at each receiving node, times
        the (invariant) degree scalers."""
        mean = scatter_sum(messages, index, scalers.count.size(0)) / scalers.count
        return (mean.unsqueeze(1) * scalers.scale).flatten(1)
