"""Structures from third-party models (torchvision, timm, research code), rebuilt
in plain torch: each converts exactly (round trip, wiring, symmetry) or is refused
with a ConversionError naming the module, never converted wrongly."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import converters
from converters import ConversionError, UnsupportedModuleError
from graphnfn import NODE_FEATURES, WEIGHT_COL, EdgeType, NodeType
from nets import assert_bitwise_equal, randomize_norms
from test_symmetry import check_permutation_symmetry
from test_transformer_tools import assert_symmetry, block_perm, permuted

POOL_AVG = NODE_FEATURES.index("pool_avg")
BN = ("weight", "bias", "running_mean", "running_var")


def roundtrip(model: nn.Module):
    g = converters.to_graph(model)
    assert_bitwise_equal(converters.from_graph(g), model.state_dict())
    return g


def nodes_of(g, name: str) -> torch.Tensor:
    return (g.node_group == g.spec.node_groups.index(name)).nonzero().squeeze(1)


def dense_kernel_from_graph(g, conv: nn.Conv2d, name: str, source: str) -> torch.Tensor:
    """The conv's kernel as a dense [out, in, kh, kw] tensor read from the graph's
    edges alone (a missing edge is a zero): what the wiring says the layer computes."""
    dst, src = nodes_of(g, name), nodes_of(g, source)
    dense = torch.zeros(conv.out_channels, conv.in_channels, *conv.kernel_size, dtype=g.edge_attr.dtype)
    k = conv.kernel_size[0] * conv.kernel_size[1]
    for e in (torch.isin(g.edge_index[1], dst) & (g.edge_type == EdgeType.CONV)).nonzero().squeeze(1).tolist():
        j = int((dst == g.edge_index[1, e]).nonzero())
        i = int((src == g.edge_index[0, e]).nonzero())
        dense[j, i] = g.edge_attr[e, WEIGHT_COL:WEIGHT_COL + k].view(conv.kernel_size)
    return dense


# ---- grouped and depthwise convolutions (MobileNet, MnasNet, ResNeXt, RegNet) ------

def mobile_block(c_in: int = 3, c: int = 6, c_out: int = 4) -> nn.Sequential:
    """Pointwise, depthwise (channel multiplier 1), pointwise: MobileNet's inverted residual body."""
    return nn.Sequential(OrderedDict(
        expand=nn.Conv2d(c_in, c, 1, bias=False), bn1=nn.BatchNorm2d(c), relu1=nn.ReLU(inplace=True),
        dw=nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), bn2=nn.BatchNorm2d(c), relu2=nn.ReLU(inplace=True),
        project=nn.Conv2d(c, c_out, 1), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(c_out, 2)))


def test_grouped_convs_are_wired_per_group():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(4, 6, 3, groups=2), relu=nn.ReLU(),
        b=nn.Conv2d(6, 12, 3, padding=1, groups=6, padding_mode="circular"),  # depthwise, channel multiplier 2
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(12, 3))).double()
    g = roundtrip(model)
    assert int((g.edge_type == EdgeType.CONV).sum()) == 6 * 2 + 12 * 1  # out x in / groups, not out x in
    # the graph alone gives back each layer's function (its missing edges are the zeros of a dense kernel)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    for name, conv, source, inp in (("a", model.a, "input", x), ("b", model.b, "a", torch.relu(model.a(x)))):
        dense = dense_kernel_from_graph(g, conv, name, source)
        got = F.conv2d(F.pad(inp, (1,) * 4, mode="circular") if name == "b" else inp, dense, conv.bias)
        torch.testing.assert_close(got, conv(inp), rtol=0, atol=1e-12)
    with pytest.raises(ConversionError, match=r"a\.weight: a grouped convolution \(groups=2\)"):
        converters.to_weight_space(model)
    # Conv1d too, and a channel-count mismatch is still an error naming the weight
    roundtrip(nn.Sequential(nn.Conv1d(4, 4, 3, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3, 2)))
    with pytest.raises(ConversionError, match=r"1\.weight.*groups=2 expects 4 input channels"):
        converters.to_graph(nn.Sequential(nn.Conv2d(1, 6, 1), nn.Conv2d(4, 4, 3, groups=2)))


def test_depthwise_channel_permutation_is_an_isomorphism():
    torch.manual_seed(0)
    model = mobile_block()
    randomize_norms(model, torch.Generator().manual_seed(1))
    p = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    # one permutation through expand, the depthwise conv (rows only: its in-dim is 1) and project
    moves = [("expand.weight", 0, p), ("dw.weight", 0, p), ("project.weight", 1, p)]
    moves += [(f"bn{i}.{t}", 0, p) for i in (1, 2) for t in BN]
    x = (torch.randn(2, 3, 8, 8, dtype=torch.float64),)
    assert_symmetry(model, moves, {n: p for n in ("expand", "bn1", "dw", "bn2")}, x)
    # permuting the depthwise channels alone is not a symmetry: the check can fail
    alone = permuted(model.double().eval(), [("dw.weight", 0, p)] + [(f"bn2.{t}", 0, p) for t in BN])
    with torch.no_grad():
        assert not torch.allclose(alone(*x), model(*x))


def test_grouped_conv_group_permutation_is_an_isomorphism():
    """ResNeXt's grouped 3x3: groups permute as blocks (inputs and outputs together)."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(2, 6, 1), relu=nn.ReLU(), b=nn.Conv2d(6, 9, 3, groups=3), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(9, 2)))
    order = torch.tensor([2, 0, 1])
    p_in, p_out = block_perm(order, 2), block_perm(order, 3)
    moves = [("a.weight", 0, p_in), ("a.bias", 0, p_in), ("b.weight", 0, p_out), ("b.bias", 0, p_out),
             ("fc.weight", 1, p_out)]
    assert_symmetry(model, moves, {"a": p_in, "b": p_out}, (torch.randn(2, 2, 6, 6, dtype=torch.float64),))


class Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck: 1x1, grouped 3x3, 1x1, downsample Sequential, one in-place ReLU used thrice."""

    def __init__(self, c_in: int, width: int, c_out: int, groups: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def test_resnext_bottleneck_converts_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          Bottleneck(4, 8, 6, groups=4, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    randomize_norms(model, torch.Generator().manual_seed(1))
    g = roundtrip(model)
    assert int((g.edge_type == EdgeType.CONV).sum()) == 3 * 4 + 4 * 8 + 8 * 2 + 8 * 6 + 4 * 6
    assert int((g.node_type == NodeType.RESIDUAL).sum()) == 6
    assert g.spec.entries[[e.key for e in g.spec.entries].index("3.bn2.num_batches_tracked")].kind == "const"


# ---- adaptive pooling to more than one position (VGG, AlexNet) ------------------------

def test_adaptive_pooling_keeps_its_output_size():
    torch.manual_seed(0)
    vgg = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(inplace=True), maxpool=nn.MaxPool2d(2),
        avgpool=nn.AdaptiveAvgPool2d((2, 3)), flatten=nn.Flatten(), drop1=nn.Dropout(),
        fc1=nn.Linear(4 * 6, 8), relu1=nn.ReLU(True), drop2=nn.Dropout(), fc2=nn.Linear(8, 3)))
    g = roundtrip(vgg)
    conv = nodes_of(g, "conv")
    assert g.x[conv, POOL_AVG].tolist() == [-6.0] * 4  # adaptive to 6 positions, not global (-1)
    assert int((g.node_type == NodeType.FLATTEN).sum()) == 4 * 6
    vgg.input_shape = (3, 8, 8)
    check_permutation_symmetry(vgg, 0)

    def pooled(size):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(size), nn.Conv2d(4, 2, 1), nn.Flatten(),
                             nn.Linear(2, 1))
    # no Flatten nodes tell the two apart here: only the pooling feature does
    assert converters.to_graph(pooled(1)).x[:7, POOL_AVG].min() == -1
    assert converters.to_graph(pooled((1, 1))).x[:7, POOL_AVG].min() == -1
    assert converters.to_graph(pooled(2)).x[:7, POOL_AVG].min() == -4


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 3, 3), nn.Linear(3 * 4, 1)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_max_pool2d(F.relu(self.conv(x)), 2), 1))


def test_functional_adaptive_pooling_keeps_its_output_size():
    g = roundtrip(FunctionalPool())
    assert g.x[nodes_of(g, "conv"), NODE_FEATURES.index("pool_max")].tolist() == [-4.0] * 3


@pytest.mark.parametrize("model, where", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d((None, 1)), nn.Flatten(), nn.Linear(24, 1)),
     r"^1: adaptive pooling to \(None, 1\) keeps a dim"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)), r"^1: .*return_indices"),
])
def test_pooling_the_graph_cannot_hold_is_refused(model, where):
    with pytest.raises(UnsupportedModuleError, match=where):
        converters.to_graph(model)


# ---- subclasses, parametrizations, hooks, lazy modules -----------------------------

class StdConv2d(nn.Conv2d):
    """Weight-standardised conv (BiT / timm): a Conv2d whose forward is not Conv2d's."""

    def forward(self, x):
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class ScaledAttention(nn.MultiheadAttention):
    def forward(self, query, key, value, **kwargs):
        out, weights = super().forward(query, key, value, **kwargs)
        return 2 * out, weights


class PlainLinear(nn.Linear):
    """A subclass that keeps Linear's forward: it is a Linear."""


class UsesPlainLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = PlainLinear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


@pytest.mark.parametrize("model, where", [
    (nn.Sequential(StdConv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 1)), r"^0: fx node 'mean'"),
    (nn.Sequential(ScaledLinear(3, 4), nn.ReLU(), nn.Linear(4, 1)), r"^0: fx node"),
    (ScaledAttention(4, 2, batch_first=True), "ScaledAttention"),
])
def test_subclass_with_its_own_forward_is_not_read_as_the_layer(model, where):
    with pytest.raises(UnsupportedModuleError, match=where):
        converters.to_graph(model)


def test_subclass_keeping_the_forward_is_the_layer():
    roundtrip(nn.Sequential(PlainLinear(3, 4), nn.ReLU(), PlainLinear(4, 1)))
    g = roundtrip(UsesPlainLinear())  # inside a traced forward too, not traced through
    assert "a" in g.spec.node_groups


class Residual(nn.Sequential):
    """A residual wrapper written as a Sequential subclass (ConvMixer style)."""

    def forward(self, x):
        return x + super().forward(x)


def test_sequential_subclass_with_its_own_forward_is_traced():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Residual(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 1))
    g = roundtrip(model)
    assert int((g.node_type == NodeType.RESIDUAL).sum()) == 4  # the skip connection is in the graph
    assert int((g.edge_type == EdgeType.RESIDUAL).sum()) == 8


def _hooked() -> nn.Module:
    m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    m[0].register_forward_hook(lambda module, inputs, output: 2 * output)
    return m


@pytest.mark.parametrize("make, where", [
    (lambda: nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 1)),
     r"^0\.weight is computed from \['0\.bias', '0\.parametrizations\.weight\.original0'"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.utils.spectral_norm(nn.Linear(4, 1))), r"^2: .*SpectralNorm"),
    (_hooked, r"^0: has forward hooks"),
    (lambda: nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.Linear(3, 1)), r"^0: lazy module"),
])
def test_weights_computed_at_run_time_are_refused(make, where):
    with pytest.raises(UnsupportedModuleError, match=where):
        converters.to_graph(make())


# ---- fx errors name the line that made the node -------------------------------------

class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.cumsum(self.fc(x), 1)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return self.inner(x)


def test_fx_error_names_the_innermost_source_line():
    with pytest.raises(UnsupportedModuleError, match=r"fx node 'cumsum'.*test_third_party\.py.*torch\.cumsum\(self\.fc"):
        converters.to_graph(Outer())


# ---- what stays refused, by name ---------------------------------------------------

class SqueezeExcitation(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)

    def forward(self, x):
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return scale * x


def test_gating_and_shared_pooling_are_refused_by_name():
    se = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), SqueezeExcitation(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(4, 2))
    with pytest.raises(UnsupportedModuleError, match=r"^2: fx node 'mul'.*return scale \* x"):
        converters.to_graph(se)
    with pytest.raises(UnsupportedModuleError, match="ReLU6"):
        converters.to_graph(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6()))


# ---- torchvision's ViT: shape checks, a reshape to [B, C, H*W], nn.MultiheadAttention ----

class EncoderBlock(nn.Module):
    def __init__(self, heads: int, dim: int, mlp: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.1)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.1), nn.Linear(mlp, dim), nn.Dropout(0.1))

    def forward(self, input):
        torch._assert(input.dim() == 3, f"Expected (batch_size, seq_length, hidden_dim) got {input.shape}")
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        return x + self.mlp(self.ln_2(x))


class TorchvisionStyleViT(nn.Module):
    """torchvision.models.VisionTransformer's forward, written out small."""

    def __init__(self, image: int = 8, patch: int = 4, dim: int = 8, heads: int = 2, classes: int = 3):
        super().__init__()
        self.image_size, self.patch_size, self.hidden_dim = image, patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.layers = nn.Sequential(OrderedDict(encoder_layer_0=EncoderBlock(heads, dim, 2 * dim)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, classes)))

    def _process_input(self, x):
        n, c, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
        n_h, n_w = h // p, w // p
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, n_h * n_w)
        return x.permute(0, 2, 1)

    def forward(self, x):
        x = self._process_input(x)
        n = x.shape[0]
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.ln(self.layers(x + self.pos_embedding))
        return self.heads(x[:, 0])


def test_torchvision_style_vit_converts_exactly():
    torch.manual_seed(0)
    model = TorchvisionStyleViT()
    g = roundtrip(model)
    assert int((g.node_type == NodeType.HEAD).sum()) == 2
    assert int((g.node_type == NodeType.INPUT).sum()) == 3 * 4 * 4  # the conv is read as the Linear on patches
    # swapping the two heads (q, k, v rows as blocks, W_o's columns) is an isomorphism
    attn = "layers.encoder_layer_0.self_attention"
    heads, q = torch.tensor([1, 0]), block_perm(torch.tensor([1, 0]), 4)
    rows = torch.cat([q, 8 + q, 16 + q])
    moves = [(f"{attn}.in_proj_weight", 0, rows), (f"{attn}.in_proj_bias", 0, rows), (f"{attn}.out_proj.weight", 1, q)]
    perms = {f"{attn}:q": q, f"{attn}:k": q, f"{attn}:v": q, f"{attn}:heads": heads}
    assert_symmetry(model, moves, perms, (torch.randn(2, 3, 8, 8, dtype=torch.float64),))


class WrongChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(x.size(0), 2, -1).permute(0, 2, 1))


def test_reshape_to_other_channel_counts_is_refused():
    with pytest.raises(ConversionError, match="reshape to 2 channels of a feature map with 4 channels"):
        converters.to_graph(WrongChannels())
