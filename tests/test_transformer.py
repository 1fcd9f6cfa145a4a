"""Transformers as neuron graphs: nn.MultiheadAttention, nn.TransformerEncoder(Layer),
hand-written ViT/GPT attention. Exact round trip; the attention encoding of docs/encoding.md;
each symmetry (heads, dims inside a head jointly on q,k and on v,o, MLP hidden
neurons, residual-stream dims) keeps the function (float64) and gives an
isomorphic graph under the induced node permutation; variants are refused."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import converters
import graphnfn
from converters import UnsupportedModuleError
from converters.program import tag
from converters.reference_nets import GPT
from graphnfn import NODE_FEATURES, WEIGHT_COL, EdgeType, NodeType
from graphnfn.modules import SelfAttention, ViT
from nets import assert_bitwise_equal, mlps
from test_symmetry import edge_rows
from test_transformer_tools import assert_symmetry, block_perm, group_node_map, permuted, within_blocks

DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16])
SEEDS = st.integers(0, 2**16)


def mha_from(draw, separate: bool | None = None) -> nn.MultiheadAttention:
    heads, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    e = heads * d
    sep = draw(st.booleans()) if separate is None else separate
    kdim, vdim = (draw(st.integers(1, 4)), draw(st.integers(1, 4))) if sep else (None, None)
    torch.manual_seed(draw(SEEDS))
    m = nn.MultiheadAttention(e, heads, bias=draw(st.booleans()), kdim=kdim, vdim=vdim, batch_first=True)
    if m.in_proj_bias is not None:
        with torch.no_grad():
            m.in_proj_bias.normal_()
            m.out_proj.bias.normal_()
    return m


@st.composite
def mhas(draw, separate: bool | None = None):
    return mha_from(draw, separate)


@st.composite
def encoder_layers(draw):
    heads, d = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    torch.manual_seed(draw(SEEDS))
    layer = nn.TransformerEncoderLayer(heads * d, heads, draw(st.integers(1, 6)), dropout=0.0,
                                       activation=draw(st.sampled_from(["relu", "gelu"])),
                                       norm_first=draw(st.booleans()), batch_first=True, bias=draw(st.booleans()))
    for p in layer.parameters():
        if p.dim() == 1:
            with torch.no_grad():
                p.normal_()  # non-trivial biases and LayerNorm scales
    return layer


def vit_from(draw) -> ViT:
    heads = draw(st.integers(1, 2))
    torch.manual_seed(draw(SEEDS))
    dim = heads * draw(st.integers(1, 2))
    return ViT(image_size=4, patch=2, in_channels=draw(st.integers(1, 2)), dim=dim, depth=draw(st.integers(1, 2)),
               heads=heads, mlp_dim=dim * draw(st.integers(1, 2)), num_classes=2,
               patch_embed=draw(st.sampled_from(["conv", "linear"])), packed=draw(st.booleans()),
               readout=draw(st.sampled_from(["cls", "mean"])))


@st.composite
def vits(draw):
    return vit_from(draw)


@st.composite
def gpts(draw):
    heads = draw(st.integers(1, 2))
    torch.manual_seed(draw(SEEDS))
    return GPT(vocab=draw(st.integers(2, 6)), context=4, dim=heads * draw(st.integers(1, 2)),
               depth=draw(st.integers(1, 2)), heads=heads)


class EncoderLM(nn.Module):
    """Token embedding, nn.TransformerEncoder, a head: the nn-module transformer."""

    def __init__(self, vocab=5, dim=4, heads=2, depth=2, norm_first=True):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 6, dropout=0.0, norm_first=norm_first, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, idx):
        return self.head(self.encoder(self.emb(idx)))


def tokens(model: nn.Module, gen: torch.Generator, batch: int = 3, length: int = 4):
    """Inputs for model: token ids, images / patches, or one token sequence."""
    if isinstance(model, (GPT, EncoderLM)):
        vocab = model.wte.num_embeddings if isinstance(model, GPT) else model.emb.num_embeddings
        return (torch.randint(0, vocab, (batch, length), generator=gen),)
    if isinstance(model, ViT):
        if model.conv:
            c = model.patch_embed.in_channels
            return (torch.randn(batch, c, 4, 4, generator=gen, dtype=torch.float64),)
        return (torch.randn(batch, 4, model.patch_embed.in_features, generator=gen, dtype=torch.float64),)
    if isinstance(model, nn.MultiheadAttention):
        q = torch.randn(batch, length, model.embed_dim, generator=gen, dtype=torch.float64)
        if model._qkv_same_embed_dim:
            return q, q, q
        return (q, torch.randn(batch, length + 1, model.kdim, generator=gen, dtype=torch.float64),
                torch.randn(batch, length + 1, model.vdim, generator=gen, dtype=torch.float64))
    d = model.self_attn.embed_dim
    return (torch.randn(batch, length, d, generator=gen, dtype=torch.float64),)


def roundtrip(model):
    assert_bitwise_equal(converters.from_graph(converters.to_graph(model)), model.state_dict())


# ---- round trip --------------------------------------------------------------------------

@given(mhas(), DTYPES)
def test_multihead_attention_roundtrip(model, dtype):
    roundtrip(model.to(dtype))


@given(encoder_layers(), DTYPES)
def test_encoder_layer_roundtrip(model, dtype):
    roundtrip(model.to(dtype))


@given(st.one_of(vits(), gpts()), DTYPES)
def test_vit_and_gpt_roundtrip(model, dtype):
    roundtrip(model.to(dtype))


def test_encoder_roundtrip():
    torch.manual_seed(0)
    for norm_first in (False, True):
        roundtrip(EncoderLM(norm_first=norm_first))
        roundtrip(nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8, batch_first=True), 2,
                                        enable_nested_tensor=False))


@given(st.lists(st.one_of(mhas(), encoder_layers(), vits(), gpts(), st.builds(EncoderLM, norm_first=st.booleans()),
                          mlps()), min_size=1, max_size=4))
def test_roundtrip_after_collate(models):
    batch = graphnfn.collate([converters.to_graph(m) for m in models])
    for m, g, sd in zip(models, batch.to_data_list(), converters.from_graph(batch)):
        assert_bitwise_equal(converters.from_graph(g), m.state_dict())
        assert_bitwise_equal(sd, m.state_dict())


# ---- the encoding ------------------------------------------------------------------------

def test_attention_encoding_by_hand():
    torch.manual_seed(0)
    e, h = 6, 2
    m = nn.MultiheadAttention(e, h)
    g = converters.to_graph(m)
    count = lambda t: int((g.node_type == t).sum())  # noqa: E731
    assert (count(NodeType.QUERY), count(NodeType.KEY), count(NodeType.VALUE), count(NodeType.HEAD)) == (e, e, e, h)
    etype = lambda t: g.edge_type == t  # noqa: E731
    for t in (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V, EdgeType.ATTN_O):
        assert int(etype(t).sum()) == e * e
    assert int(etype(EdgeType.QK_PAIR).sum()) == e and int(etype(EdgeType.HEAD).sum()) == 3 * e
    src, dst = g.edge_index
    q = lambda r: int(((g.node_type == NodeType.QUERY) & (g.neuron == r)).nonzero())  # noqa: E731
    k = lambda r: int(((g.node_type == NodeType.KEY) & (g.neuron == e + r)).nonzero())  # noqa: E731
    # W_q edges: stream feature i -> query r carries in_proj_weight[r, i]; biases on the nodes
    wq = etype(EdgeType.ATTN_Q) & (dst == q(4))
    assert torch.equal(g.edge_attr[wq, WEIGHT_COL], m.in_proj_weight.detach()[4])
    assert g.x[k(1), NODE_FEATURES.index("bias")] == m.in_proj_bias[e + 1]
    # q-k pairing inside a head, scaled by 1/sqrt(d_k); head h owns dims h*d .. h*d + d - 1
    pair = etype(EdgeType.QK_PAIR)
    assert sorted(zip(src[pair].tolist(), dst[pair].tolist())) == sorted((q(r), k(r)) for r in range(e))
    assert torch.allclose(g.edge_attr[pair, WEIGHT_COL], torch.tensor((e // h) ** -0.5))
    heads = (g.node_type == NodeType.HEAD).nonzero().squeeze(1)
    into_head = etype(EdgeType.HEAD) & (dst == heads[1])
    assert sorted(g.neuron[src[into_head]].tolist()) == [3, 4, 5, e + 3, e + 4, e + 5]
    assert torch.all(g.x[heads, NODE_FEATURES.index("act_softmax")] == 1)
    # W_o edges: value (head 1, dim 0) -> output j carries out_proj.weight[j, 3]
    v = int(((g.node_type == NodeType.VALUE) & (g.neuron == 2 * e + 3)).nonzero())
    wo = etype(EdgeType.ATTN_O) & (src == v)
    assert torch.equal(g.edge_attr[wo, WEIGHT_COL], m.out_proj.weight.detach()[:, 3])


def test_residual_layernorm_embeddings_and_class_token():
    torch.manual_seed(0)
    m = ViT(image_size=4, patch=2, in_channels=1, dim=4, depth=1, heads=2, num_classes=2)
    g = converters.to_graph(m)
    ln = g.node_type == NodeType.LAYER_NORM
    assert int(ln.sum()) == 3 * 4  # norm1, norm2, final norm
    into_ln = (g.edge_type == EdgeType.NORM)
    norm1 = g.node_group[g.edge_index[1, into_ln]] == g.spec.node_groups.index("blocks.0.norm1")
    assert torch.equal(g.edge_attr[into_ln][norm1, WEIGHT_COL], m.blocks[0].norm1.weight.detach())
    cls = (g.node_type == NodeType.CLASS_TOKEN).nonzero().squeeze(1)
    pos = (g.node_type == NodeType.POSITION).nonzero().squeeze(1)
    assert cls.numel() == 1 and pos.numel() == 5
    assert g.x[pos, NODE_FEATURES.index("position")].tolist() == [0, 1, 2, 3, 4]
    from_cls = g.edge_type == EdgeType.CLASS_TOKEN
    assert torch.equal(g.edge_attr[from_cls, WEIGHT_COL], m.cls_token.detach().reshape(-1))
    pos_edges = (g.edge_type == EdgeType.POS_EMBED) & (g.edge_index[0] == pos[2])
    assert torch.equal(g.edge_attr[pos_edges, WEIGHT_COL], m.pos_embed.detach()[0, 2])
    # residual sums: identity edges of their own type into RESIDUAL nodes
    res = g.edge_type == EdgeType.RESIDUAL
    assert torch.all(g.node_type[g.edge_index[1, res]] == NodeType.RESIDUAL)
    assert torch.all(g.edge_attr[res, WEIGHT_COL] == 1)
    # the class-token readout is a node feature of the final norm
    final = g.node_group == g.spec.node_groups.index("norm")
    assert torch.all(g.x[final, NODE_FEATURES.index("read_token")] == 0)
    gpt = converters.to_graph(GPT(vocab=5, context=3, dim=4, depth=1, heads=2))
    assert int((gpt.edge_type == EdgeType.EMBED).sum()) == 5 * 4
    assert int((gpt.node_type == NodeType.POSITION).sum()) == 3
    heads = gpt.node_type == NodeType.HEAD
    assert torch.all(gpt.x[heads, NODE_FEATURES.index("causal")] == 1)
    assert torch.all(g.x[g.node_type == NodeType.HEAD, NODE_FEATURES.index("causal")] == 0)


def test_readme_one_block_two_heads_example():
    """The drawn example of docs/encoding.md: its node and edge counts, by type."""
    from collections import Counter

    layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, norm_first=True, batch_first=True)
    g = converters.to_graph(layer)
    nodes = {NodeType(t).name: c for t, c in Counter(g.node_type.tolist()).items()}
    edges = {EdgeType(t).name: c for t, c in Counter(g.edge_type.tolist()).items()}
    assert nodes == dict(INPUT=4, LAYER_NORM=8, QUERY=4, KEY=4, HEAD=2, VALUE=4, HIDDEN=16, RESIDUAL=4, OUTPUT=4)
    assert edges == dict(NORM=8, ATTN_Q=16, ATTN_K=16, QK_PAIR=4, HEAD=12, ATTN_V=16, ATTN_O=16, RESIDUAL=16,
                         LINEAR=64)
    assert g.layer.max() == 10 and (g.num_nodes, g.num_edges) == (50, 168)


def test_conv_patch_embedding_is_the_linear_on_patches():
    """A Conv2d with stride = kernel feeding tokens is encoded as the Linear on
    flattened patches it computes: the conv ViT and the linear-patch ViT with the
    same weights have the same graph (and no 4x4 kernel columns on every edge)."""
    torch.manual_seed(0)
    conv = ViT(image_size=8, patch=4, in_channels=2, dim=4, depth=1, heads=2, num_classes=3)
    linear = ViT(image_size=8, patch=4, in_channels=2, dim=4, depth=1, heads=2, num_classes=3, patch_embed="linear")
    sd = conv.state_dict()
    linear.load_state_dict(sd | {"patch_embed.weight": sd["patch_embed.weight"].reshape(4, -1)})
    g1, g2 = converters.to_graph(conv), converters.to_graph(linear)
    assert g1.kernel_width == 1 and int((g1.node_type == NodeType.INPUT).sum()) == 2 * 4 * 4
    for field in ("x", "edge_index", "edge_attr", "node_type", "edge_type", "layer"):
        assert torch.equal(getattr(g1, field), getattr(g2, field)), field
    assert_bitwise_equal(converters.from_graph(g1), conv.state_dict())
    images = torch.randn(2, 2, 8, 8)
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(2, 4, 32)  # (c, dy, dx)
    torch.testing.assert_close(conv(images), linear(patches))


# ---- symmetries --------------------------------------------------------------------------

def head_perms(kind: str, heads: int, d_k: int, d_v: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Index permutations of the q, k, v rows (and so of W_o's columns) and of
    the heads: ``heads`` moves whole heads; ``qk`` permutes dims inside each
    head jointly on q and k; ``vo`` inside each head jointly on v and W_o."""
    ident = lambda n: torch.arange(n)  # noqa: E731
    rand = lambda n: torch.randperm(n, generator=gen)  # noqa: E731
    if kind == "heads":
        p = rand(heads)
        return {"q": block_perm(p, d_k), "k": block_perm(p, d_k), "v": block_perm(p, d_v), "heads": p}
    if kind == "qk":
        qk = within_blocks([rand(d_k) for _ in range(heads)])
        return {"q": qk, "k": qk, "v": ident(heads * d_v), "heads": ident(heads)}
    return {"q": ident(heads * d_k), "k": ident(heads * d_k), "v": within_blocks([rand(d_v) for _ in range(heads)]),
            "heads": ident(heads)}


def mha_moves(m: nn.MultiheadAttention, prefix: str, p: dict) -> list:
    e, key = m.embed_dim, (lambda n: f"{prefix}.{n}" if prefix else n)
    rows = torch.cat([p["q"], e + p["k"], 2 * e + p["v"]])
    moves = [(key("in_proj_weight"), 0, rows)] if m._qkv_same_embed_dim else \
        [(key(f"{r}_proj_weight"), 0, p[r]) for r in "qkv"]
    if m.in_proj_bias is not None:
        moves.append((key("in_proj_bias"), 0, rows))
    return moves + [(key("out_proj.weight"), 1, p["v"])]


def self_attention_moves(a: SelfAttention, prefix: str, p: dict) -> list:
    d = a.o.in_features
    if a.packed:
        rows = torch.cat([p["q"], d + p["k"], 2 * d + p["v"]])
        moves = [(f"{prefix}.qkv.weight", 0, rows), (f"{prefix}.qkv.bias", 0, rows)]
    else:
        moves = [(f"{prefix}.{r}.{t}", 0, p[r]) for r in "qkv" for t in ("weight", "bias")]
    return moves + [(f"{prefix}.o.weight", 1, p["v"])]


def node_perms(name: str, p: dict) -> dict:
    return {tag(name, role): p[role] for role in ("q", "k", "v", "heads")}


@given(mhas(), st.sampled_from(["heads", "qk", "vo"]), SEEDS)
def test_multihead_attention_symmetries(model, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    h, d = model.num_heads, model.head_dim
    p = head_perms(kind, h, d, d, gen)
    assert_symmetry(model, mha_moves(model, "", p), node_perms("", p), tokens(model, gen))


@given(encoder_layers(), st.sampled_from(["heads", "qk", "vo", "mlp"]), SEEDS)
def test_encoder_layer_symmetries(model, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        p = torch.randperm(model.linear1.out_features, generator=gen)
        moves = [("linear1.weight", 0, p), ("linear2.weight", 1, p)] + ([("linear1.bias", 0, p)] if model.linear1.bias is not None else [])
        assert_symmetry(model, moves, {"linear1": p}, tokens(model, gen))
        return
    a = model.self_attn
    p = head_perms(kind, a.num_heads, a.head_dim, a.head_dim, gen)
    assert_symmetry(model, mha_moves(a, "self_attn", p), node_perms("self_attn", p), tokens(model, gen))


def vit_moves(model, kind: str, gen: torch.Generator) -> tuple[list, dict]:
    """Parameter moves of one symmetry kind (heads, qk, vo, mlp) in every block of a
    ViT, and the node permutations they induce."""
    moves, perms = [], {}
    for i, block in enumerate(model.blocks):
        name = f"blocks.{i}"
        if kind == "mlp":
            p = torch.randperm(block.mlp[0].out_features, generator=gen)
            moves += [(f"{name}.mlp.0.weight", 0, p), (f"{name}.mlp.0.bias", 0, p), (f"{name}.mlp.2.weight", 1, p)]
            perms[f"{name}.mlp.0"] = p
            continue
        a = block.attn
        d = a.o.in_features // a.heads
        p = head_perms(kind, a.heads, d, d, gen)
        moves += self_attention_moves(a, f"{name}.attn", p)
        perms |= node_perms(f"{name}.attn", p)
    return moves, perms


@given(vits(), st.sampled_from(["heads", "qk", "vo", "mlp"]), SEEDS)
def test_vit_block_symmetries(model, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    moves, perms = vit_moves(model, kind, gen)
    assert_symmetry(model, moves, perms, tokens(model, gen))


# parameters indexed by the residual stream, and along which dim, in the reference nets and EncoderLM
STREAM_DIMS = [
    (r"(patch_embed\.(weight|bias)|attn\.o\.(weight|bias)|mlp\.2\.(weight|bias)|out_proj\.(weight|bias)"
     r"|linear2\.(weight|bias)|norm\w*\.(weight|bias)|ln_f\.(weight|bias))$", 0),
    (r"(attn\.(qkv|q|k|v)\.weight|mlp\.0\.weight|in_proj_weight|linear1\.weight|head\.weight|wte\.weight"
     r"|wpe\.weight|emb\.weight)$", 1),
    (r"(cls_token|pos_embed)$", 2),
]


def stream_moves(model: nn.Module, p: torch.Tensor) -> list:
    moves = []
    for key in model.state_dict():
        dims = [dim for pattern, dim in STREAM_DIMS if re.search(pattern, key)]
        if dims:
            moves.append((key, dims[0], p))
    return moves


def stream_groups(g) -> list[str]:
    """Node groups that hold residual-stream features: sums, LayerNorms, the
    embeddings and every projection writing into the stream."""
    writers = re.compile(r"(patch_embed|attn\.o|mlp\.2|out_proj|linear2|wte|wpe|^emb)$")
    return [name for i, name in enumerate(g.spec.node_groups)
            if writers.search(name) or int(g.node_type[g.node_group == i][0]) in (NodeType.RESIDUAL, NodeType.LAYER_NORM)]


@given(st.one_of(vits(), gpts(), st.builds(EncoderLM, norm_first=st.booleans())), SEEDS)
def test_residual_stream_permutation(model, seed):
    """One permutation of the stream dims across every block, embedding,
    LayerNorm and head: LayerNorm is permutation-equivariant, so this is a
    symmetry (rotations or rescalings of the stream are not, with LayerNorm)."""
    gen = torch.Generator().manual_seed(seed)
    g = converters.to_graph(model)
    d = model.head.in_features if hasattr(model, "head") else model.lm_head.in_features
    p = torch.randperm(d, generator=gen)
    groups = stream_groups(g)
    assert len(groups) >= 6
    assert_symmetry(model, stream_moves(model, p), {name: p for name in groups}, tokens(model, gen))


def test_broken_permutations_change_function_and_graph():
    """The checks above can fail: permuting q dims without k, v dims without
    W_o, or value dims across heads (with W_o) changes the function, and the
    graph is then not the image of the original under the induced node map
    (q-k pairing, W_o and head edges give each away)."""
    torch.manual_seed(0)
    m = nn.MultiheadAttention(4, 2, batch_first=True).double()
    x = tokens(m, torch.Generator().manual_seed(1))
    swap, across = torch.tensor([1, 0, 2, 3]), torch.tensor([2, 1, 0, 3])
    cases = [([("in_proj_weight", 0, torch.cat([swap, torch.arange(4, 12)]))], {"q": swap}),
             ([("in_proj_weight", 0, torch.cat([torch.arange(8), 8 + swap]))], {"v": swap}),
             ([("in_proj_weight", 0, torch.cat([torch.arange(8), 8 + across])), ("out_proj.weight", 1, across)],
              {"v": across})]
    for moves, perms in cases:
        other = permuted(m, moves)
        assert not torch.allclose(other(*x)[0], m(*x)[0])
        with pytest.raises(AssertionError):
            assert_symmetry(m, moves, perms, x)
        g1, g2 = converters.to_graph(m), converters.to_graph(other)
        node_map = group_node_map(g1, g2, perms)
        assert not np.array_equal(edge_rows(g1, node_map), edge_rows(g2))


# ---- refused variants ------------------------------------------------------------------

class Rotary(nn.Module):
    def __init__(self, dim=4, heads=2):
        super().__init__()
        self.n_heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, dim // heads, 2) / (dim // heads)))

    def forward(self, x):
        return self.o_proj(self.v_proj(x))


class GroupedQuery(nn.Module):
    def __init__(self, dim=4, heads=2):
        super().__init__()
        self.num_heads, self.num_kv_heads = heads, 1
        self.q_proj, self.o_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k_proj, self.v_proj = nn.Linear(dim, dim // heads), nn.Linear(dim, dim // heads)

    def forward(self, x):
        return self.o_proj(self.q_proj(x))


class RelativeBias(SelfAttention):
    def __init__(self):
        super().__init__(4, 2)
        self.rel_bias = nn.Parameter(torch.zeros(2, 5, 5))


class ReluAttention(SelfAttention):
    """q, k, v, o projections and heads, but a ReLU where the softmax belongs."""

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.o((torch.relu(q @ k.transpose(-2, -1)) @ v).transpose(1, 2).reshape(b, t, d))


class Holder(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.attn = attn

    def forward(self, x):
        x = self.fc(x)
        return self.attn(x, x, x)[0] if isinstance(self.attn, nn.MultiheadAttention) else self.attn(x)


@pytest.mark.parametrize("attn, match", [
    (Rotary(), r"attn \(Rotary\): rotary position embeddings \('inv_freq'\)"),
    (GroupedQuery(), r"attn \(GroupedQuery\): grouped-query"),
    (RelativeBias(), r"attn: parameter 'attn\.rel_bias' is not part of the q/k/v/o projections"),
    (ReluAttention(4, 2), r"attn \(ReluAttention\): .*does not compute plain multi-head scaled dot-product attention"),
    (nn.MultiheadAttention(4, 2, add_bias_kv=True), r"attn: MultiheadAttention with add_bias_kv"),
])
def test_attention_variants_are_refused_naming_the_module(attn, match):
    with pytest.raises(UnsupportedModuleError, match=match):
        converters.to_graph(Holder(attn))
