"""Random networks for the tests (hypothesis strategies) and the tools to check
them: bitwise state_dict equality and hidden-neuron permutations."""
from __future__ import annotations

import math

import torch
from hypothesis import reject, strategies as st
from torch import nn

from graphnfn import Sine

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, lambda: Sine(30.0), lambda: nn.LeakyReLU(0.2), nn.SiLU]
INT_OF = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
          torch.bfloat16: torch.int16, torch.int64: torch.int64}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    """Same keys in the same order, same shapes and dtypes, same bits (NaN and -0.0 included)."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(INT_OF[a[k].dtype]), b[k].view(INT_OF[b[k].dtype])), k


def randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorms non-trivial statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.affine:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                    m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=gen)))


def _nest(draw, layers: list[nn.Module]) -> nn.Sequential:
    """Wrap a random slice in an inner Sequential (nesting must not matter)."""
    if len(layers) > 2 and draw(st.booleans()):
        i = draw(st.integers(0, len(layers) - 2))
        j = draw(st.integers(i + 1, len(layers)))
        layers = layers[:i] + [nn.Sequential(*layers[i:j])] + layers[j:]
    return nn.Sequential(*layers)


def _batchnorm(draw, kind, n: int) -> nn.Module:
    return kind(n, affine=draw(st.booleans()), track_running_stats=draw(st.booleans()))


@st.composite
def mlps(draw, max_depth: int = 4, max_width: int = 6, norms: bool = True) -> nn.Sequential:
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=draw(st.booleans())))
        if i < depth - 1:
            if norms and draw(st.booleans()):
                layers.append(_batchnorm(draw, nn.BatchNorm1d, widths[i + 1]))
            layers.append(draw(st.sampled_from(ACTIVATIONS))())
            if draw(st.booleans()):
                layers.append(nn.Dropout(0.1))
    model = _nest(draw, layers)
    model.input_shape = (widths[0],)
    return model


@st.composite
def cnns(draw, size: int = 12) -> nn.Sequential:
    """Conv1d or Conv2d stacks (kernel, stride, padding, dilation, padding mode,
    BN, pooling all drawn) ending in global pooling, adaptive pooling + Flatten,
    or a plain Flatten, then a Linear head. Inputs are ``size`` long/square."""
    two_d = draw(st.booleans())
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if two_d else (nn.Conv1d, nn.BatchNorm1d)
    n_conv = draw(st.integers(1, 3))
    chans = draw(st.lists(st.integers(1, 4), min_size=n_conv + 1, max_size=n_conv + 1))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layers: list[nn.Module] = []
    for i in range(n_conv):
        k = draw(st.integers(1, 3))
        kernel = (k, draw(st.integers(1, 3))) if two_d else k
        stride = draw(st.integers(1, 2))
        padding = "same" if stride == 1 and draw(st.booleans()) else draw(st.integers(0, 1))
        layers.append(conv(chans[i], chans[i + 1], kernel, stride=stride, padding=padding,
                           dilation=draw(st.integers(1, 2)), bias=draw(st.booleans()),
                           padding_mode=draw(st.sampled_from(["zeros", "zeros", "circular", "replicate"]))))
        if draw(st.booleans()):
            layers.append(_batchnorm(draw, bn, chans[i + 1]))
        layers.append(draw(st.sampled_from(ACTIVATIONS))())
        if i == 0 and draw(st.booleans()):
            layers.append((nn.MaxPool2d if two_d else nn.MaxPool1d)(2))
    head = draw(st.sampled_from(["global", "adaptive", "flatten"]))
    if head == "global":
        layers += [(nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d)(1), nn.Flatten()]
    elif head == "adaptive":
        layers += [(nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d)(2), nn.Flatten()]
    else:
        layers.append(nn.Flatten())
    try:
        probe = nn.Sequential(*layers).eval()(torch.randn((2, chans[0]) + ((size, size) if two_d else (size,))))
    except RuntimeError:  # the drawn kernels shrank the input to nothing
        reject()
    layers.append(nn.Linear(probe.size(1), draw(st.integers(1, 4))))
    model = _nest(draw, layers)
    model.input_shape = (chans[0],) + ((size, size) if two_d else (size,))
    return model


def leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not isinstance(m, nn.Sequential)]


def permute_hidden(model: nn.Sequential, gen: torch.Generator) -> tuple[nn.Sequential, dict[int, torch.Tensor]]:
    """A copy of ``model`` with the hidden neurons/channels of every layer
    randomly permuted (BatchNorm statistics and Flatten blocks with them): the
    same function. Also returns, per node depth of the neuron graph, the
    permutation ``p`` with new neuron k = old neuron p[k]."""
    import copy

    model = copy.deepcopy(model)
    params = [m for m in leaves(model) if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    perms: dict[int, torch.Tensor] = {}
    depth, pending, flattened = 0, None, False
    with torch.no_grad():
        for m in leaves(model):
            if isinstance(m, nn.Flatten):
                flattened = pending is not None and isinstance(params[0], (nn.Conv1d, nn.Conv2d))
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if pending is not None:
                    cols = pending
                    positions = m.weight.size(1) // pending.numel()
                    if isinstance(m, nn.Linear) and flattened and positions > 1:
                        depth += 1  # the flatten nodes: blocks of `positions` follow their channel
                        cols = (pending[:, None] * positions + torch.arange(positions)).reshape(-1)
                        perms[depth] = cols
                    m.weight.copy_(m.weight[:, cols])
                depth += 1
                pending = None
                if m is not params[-1]:
                    pending = torch.randperm(m.weight.size(0), generator=gen)
                    perms[depth] = pending
                    m.weight.copy_(m.weight[pending])
                    if m.bias is not None:
                        m.bias.copy_(m.bias[pending])
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                depth += 1
                if pending is not None:
                    perms[depth] = pending
                    for t in (m.weight, m.bias, m.running_mean, m.running_var):
                        if t is not None:
                            t.copy_(t[pending])
    return model, perms


def induced_node_map(g1, g2, perms: dict[int, torch.Tensor]) -> torch.Tensor:
    """For each node of g1, the node of g2 it becomes: at depth d, old neuron
    p[k] is new neuron k."""
    new_neuron = g1.neuron.clone()
    for depth, p in perms.items():
        at = g1.layer == depth
        inverse = torch.empty_like(p)
        inverse[p] = torch.arange(p.numel())
        new_neuron[at] = inverse[g1.neuron[at]]
    key2 = (g2.layer * 1_000_000 + g2.neuron).tolist()
    lookup = {k: i for i, k in enumerate(key2)}
    return torch.tensor([lookup[k] for k in (g1.layer * 1_000_000 + new_neuron).tolist()])


def induced_edge_map(g1, g2, node_map: torch.Tensor) -> torch.Tensor:
    """For each edge of g1, the edge of g2 between the mapped endpoints."""
    lookup = {(s, d): i for i, (s, d) in enumerate(g2.edge_index.T.tolist())}
    return torch.tensor([lookup[(s, d)] for s, d in node_map[g1.edge_index].T.tolist()])


class SmallCNN(nn.Module):
    """A CNN that is not a Sequential (its state_dict alone does not say how it is wired):
    what ``graphnfn inspect cnn.pt --model tests.nets:SmallCNN`` builds."""

    def __init__(self, channels: int = 3, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def pi_shifted(siren: nn.Sequential, state: dict, gen: torch.Generator) -> dict:
    """``state`` of a SIREN (Linear, Sine, ..., Linear) with every hidden neuron's bias moved by
    k pi / w0 (k random in -3..3) and its outgoing weights times (-1)^k: the same function."""
    out = dict(state)
    linear = [i for i, m in enumerate(siren) if isinstance(m, nn.Linear)]
    for layer, nxt in zip(linear[:-1], linear[1:]):
        bias = out[f"{layer}.bias"]
        k = torch.randint(-3, 4, bias.shape, generator=gen).to(bias.dtype)
        out[f"{layer}.bias"] = bias + k * math.pi / siren[layer + 1].w0
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"] * (1 - 2 * k.remainder(2))
    return out
