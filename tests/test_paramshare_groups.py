"""Symmetry groups of weight spaces, written independently of graphnfn.paramshare, and the
proof that they are symmetries: acting on a network's weights leaves its function unchanged.

The other paramshare tests import the strategies and actions from here.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from graphnfn.paramshare import AttentionSpec, AttentionWeightSpace, WeightSpace, WeightSpaceSpec

GROUPS = ("np", "hnp", "scale", "sign")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run thousands of tiny matmuls: one intra-op thread avoids OpenMP hand-offs
    that cost milliseconds each on a busy 2-core machine. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def specs(draw, max_layers: int = 3, min_width: int = 1, max_width: int = 4, kinds=("mlp", "conv1d", "conv2d"),
          min_layers: int = 1) -> WeightSpaceSpec:
    """Random MLP or CNN weight-space specs: CNNs are conv layers then (optionally) linear ones."""
    L = draw(st.integers(min_layers, max_layers))
    n = draw(st.lists(st.integers(min_width, max_width), min_size=L + 1, max_size=L + 1))
    kind = draw(st.sampled_from(kinds))
    n_conv = 0 if kind == "mlp" else draw(st.integers(1, L))
    kernel_dims = 1 if kind == "conv1d" else 2
    shapes = []
    for l in range(L):
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(kernel_dims)) if l < n_conv else ()
        shapes.append((n[l + 1], n[l], *kernel))
    return WeightSpaceSpec(tuple(shapes), tuple((s[0],) for s in shapes))


@st.composite
def attention_specs(draw, max_blocks: int = 2, min_head_dim: int = 1) -> AttentionSpec:
    """Random (heads, D, d_k, d_v, D_a) per block."""
    k = min_head_dim
    blocks = [tuple(draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (2, 4), (k, 3), (k, 3), (2, 4)))
              for _ in range(draw(st.integers(1, max_blocks)))]
    return AttentionSpec.from_dims(blocks)


def random_space(spec, batch: int = 2, channels: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    fields = [tuple(torch.randn(batch, channels, *s, generator=gen, dtype=torch.float64) for s in f)
              for f in spec.tensor_fields]
    return AttentionWeightSpace(*fields) if isinstance(spec, AttentionSpec) else WeightSpace(*fields, spec.activations)


def sample_element(spec: WeightSpaceSpec, group: str, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per neuron layer: a permutation (index array) and a diagonal (float64 vector); where the
    group moves a layer, neither is the identity (permutations need two neurons)."""
    gen = torch.Generator().manual_seed(seed)
    n = [spec.weight_shapes[0][1]] + [s[0] for s in spec.weight_shapes]
    L = len(n) - 1
    perms, diags = [], []
    for s, width in enumerate(n):
        moves = group == "np" or 0 < s < L
        perm = torch.randperm(width, generator=gen) if moves else torch.arange(width)
        if moves and torch.equal(perm, torch.arange(width)):
            perm = perm.roll(1)  # never the identity, so that a check under the group cannot pass vacuously
        perms.append(perm)
        if moves and group == "scale":
            diags.append(torch.exp(torch.randn(width, generator=gen, dtype=torch.float64)))
        elif moves and group == "sign":
            signs = torch.randint(0, 2, (width,), generator=gen).double() * 2 - 1
            diags.append(signs if (signs < 0).any() else signs.index_fill(0, torch.tensor([0]), -1.0))
        else:
            diags.append(torch.ones(width, dtype=torch.float64))
    return perms, diags


def act(ws: WeightSpace, perms, diags) -> WeightSpace:
    """Neuron j of layer s becomes old neuron perms[s][j] scaled by diags[s][j]:
    W_l[j, k] -> d_{l+1}[j] W_l[p_{l+1}[j], p_l[k]] / d_l[k],  b_l[j] -> d_{l+1}[j] b_l[p_{l+1}[j]]."""
    weights, biases = [], []
    for l, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        p_out, p_in, d_out, d_in = perms[l + 1], perms[l], diags[l + 1], diags[l]
        scale = (d_out[:, None] / d_in[None, :]).reshape(1, 1, len(d_out), len(d_in), *(1,) * (w.dim() - 4))
        weights.append(w[:, :, p_out][:, :, :, p_in] * scale.to(w.dtype))
        biases.append(b[:, :, p_out] * d_out.to(b.dtype))
    return ws._replace(weights=tuple(weights), biases=tuple(biases))


def sample_attention_element(spec: AttentionSpec, seed: int) -> list[dict]:
    """Per block: head permutation, invertible A (query/key) and C (value/out) per head, MLP permutation."""
    gen = torch.Generator().manual_seed(seed)
    elements = []
    for i in range(spec.num_blocks):
        b = spec.block(i)

        def invertible(d):  # well conditioned: orthogonal times a positive diagonal
            q, _ = torch.linalg.qr(torch.randn(b.heads, d, d, generator=gen, dtype=torch.float64))
            return q * torch.exp(0.5 * torch.randn(b.heads, 1, d, generator=gen, dtype=torch.float64))

        elements.append({"heads": torch.randperm(b.heads, generator=gen), "A": invertible(b.d_k),
                         "C": invertible(b.d_v), "mlp": torch.randperm(b.d_mlp, generator=gen)})
    return elements


def act_attention(ws: AttentionWeightSpace, elements: list[dict]) -> AttentionWeightSpace:
    """W_q[i] -> W_q[tau i] A_i, W_k[i] -> W_k[tau i] A_i^{-T}, W_v[i] -> W_v[tau i] C_i,
    W_o[i] -> C_i^{-1} W_o[tau i], MLP hidden neurons permuted."""
    fields = [[] for _ in range(8)]
    for i, g in enumerate(elements):
        tau, A, C, pi = g["heads"], g["A"], g["C"], g["mlp"]
        fields[0].append(ws.query[i][:, :, tau] @ A)
        fields[1].append(ws.key[i][:, :, tau] @ torch.linalg.inv(A).transpose(-1, -2))
        fields[2].append(ws.value[i][:, :, tau] @ C)
        fields[3].append(torch.linalg.inv(C) @ ws.out[i][:, :, tau])
        fields[4].append(ws.mlp_in[i][..., pi])
        fields[5].append(ws.mlp_in_bias[i][..., pi])
        fields[6].append(ws.mlp_out[i][:, :, pi])
        fields[7].append(ws.mlp_out_bias[i])
    return AttentionWeightSpace(*(tuple(f) for f in fields))


def max_rel_diff(a, b) -> float:
    """max |a - b| / (1 + max |a|) over all tensors of two containers (or two tensors)."""
    a = [a] if torch.is_tensor(a) else [t for f in a.tensor_fields for t in f]
    b = [b] if torch.is_tensor(b) else [t for f in b.tensor_fields for t in f]
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(float((x - y).abs().max()) / (1 + float(x.abs().max())) for x, y in zip(a, b))


def group_moves(spec: WeightSpaceSpec, group: str) -> bool:
    """Does a random element of ``group`` move a generic point of the space?"""
    n = [spec.weight_shapes[0][1]] + [s[0] for s in spec.weight_shapes]
    L = len(n) - 1
    return any((group == "np" or 0 < s < L) and (n[s] > 1 or group in ("scale", "sign")) for s in range(L + 1))


# ---- the actions are symmetries of the networks ----

def network(ws: WeightSpace, x: torch.Tensor, activation) -> torch.Tensor:
    """Run channel 0 of sample 0 as a network: conv layers (padding 'same') then global mean
    pooling before the first linear layer, ``activation`` between layers."""
    L = len(ws.weights)
    for l, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        w, b = w[0, 0], b[0, 0]
        if w.dim() > 2:
            conv = F.conv1d if w.dim() == 3 else F.conv2d
            x = conv(x, w, b, padding="same")
        else:
            if x.dim() > 2:
                x = x.flatten(2).mean(-1)
            x = x @ w.T + b
        if l < L - 1:
            x = activation(x)
    return x if x.dim() == 2 else x.flatten(2).mean(-1)


def network_input(spec: WeightSpaceSpec) -> torch.Tensor:
    k = len(spec.weight_shapes[0]) - 2
    return torch.randn(5, spec.weight_shapes[0][1], *(6,) * k, dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(specs(), st.sampled_from([("hnp", torch.tanh), ("scale", torch.relu), ("sign", torch.tanh),
                                 ("sign", torch.sin)]), st.integers(0, 10**6))
def test_monomial_actions_keep_the_network_function(spec, case, seed):
    group, activation = case
    ws, x = random_space(spec, 1, 1, seed), network_input(spec)
    moved = act(ws, *sample_element(spec, group, seed))
    assert max_rel_diff(network(ws, x, activation), network(moved, x, activation)) < 1e-10
    if group_moves(spec, group):
        assert max_rel_diff(ws, moved) > 1e-6


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(specs(min_layers=2, min_width=2), st.integers(0, 10**6))
def test_scaling_is_not_a_symmetry_of_tanh_networks(spec, seed):
    """The function check can fail: positive scalings change a tanh network."""
    ws, x = random_space(spec, 1, 1, seed), network_input(spec)
    moved = act(ws, *sample_element(spec, "scale", seed))
    assert max_rel_diff(network(ws, x, torch.tanh), network(moved, x, torch.tanh)) > 1e-6


def block(ws: AttentionWeightSpace, i: int, x: torch.Tensor) -> torch.Tensor:
    """Channel 0 of sample 0 of block i on tokens x [n, D]: x + attention, then + MLP."""
    q, k, v, o = (t[i][0, 0] for t in ws[:4])
    heads = torch.softmax((x @ q) @ (x @ k).transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ (x @ v) @ o
    h = x + heads.sum(0)
    return h + torch.relu(h @ ws.mlp_in[i][0, 0] + ws.mlp_in_bias[i][0, 0]) @ ws.mlp_out[i][0, 0] + ws.mlp_out_bias[i][0, 0]


@given(attention_specs(), st.integers(0, 10**6))
def test_attention_action_keeps_the_block_function(spec, seed):
    ws = random_space(spec, 1, 1, seed)
    moved = act_attention(ws, sample_attention_element(spec, seed))
    for i in range(spec.num_blocks):
        x = torch.randn(4, spec.block(i).dim, dtype=torch.float64)
        assert max_rel_diff(block(ws, i, x), block(moved, i, x)) < 1e-9
    assert max_rel_diff(ws, moved) > 1e-6
