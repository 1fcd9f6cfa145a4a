"""Hugging Face models through torch.export (tiny configs, random weights, no
network): ViT, BERT, GPT-2 (Conv1D weights stored [in, out], tied embedding)
and Llama (RMSNorm, SwiGLU, rotary embeddings, grouped-query attention).
Exact round trip and logits; the encoding by hand; each symmetry keeps the
function (float64) and gives an isomorphic graph, a changed weight does not;
rotary pairs admit exactly the permutations that keep the function;
Transformer-NFN's format; model directories from the API and the CLI;
patterns the converter does not know are refused by module and aten op."""
import copy
import itertools

import pytest
import torch

import converters
import graphnfn
from converters.program import tag
from graphnfn import NODE_FEATURES, WEIGHT_COL, EdgeType, NodeType
from nets import assert_bitwise_equal
from test_symmetry import _isomorphic
from test_transformer import head_perms, node_perms
from test_transformer_tools import (assert_isomorphic_under, assert_symmetry, block_perm, group_node_map, permuted,
                                   within_blocks)

transformers = pytest.importorskip("transformers")
COL = NODE_FEATURES.index


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: a second OpenMP thread only waits at barriers on a loaded machine (see converters.threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random(model, seed: int):
    """Every parameter random (HF starts LayerNorms at 1 and biases at 0, which
    would hide a misplaced one); no cache, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    model.config.use_cache = False
    return model.eval()


def vit(seed: int = 0):
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=2, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=12, num_labels=3)
    return _random(transformers.ViTForImageClassification(cfg), seed)


def bert(seed: int = 0):
    cfg = transformers.BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=12, max_position_embeddings=16, num_labels=3, pad_token_id=0)
    return _random(transformers.BertForSequenceClassification(cfg), seed)


def gpt2(seed: int = 0):
    cfg = transformers.GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
                                  eos_token_id=0)
    return _random(transformers.GPT2LMHeadModel(cfg), seed)


def llama(seed: int = 0):
    """4 query heads of size 4 in 2 groups (grouped-query attention), rotary pairs (i, i + 2)."""
    cfg = transformers.LlamaConfig(vocab_size=11, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=12, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return _random(transformers.LlamaForCausalLM(cfg), seed)


MODELS = {"vit": vit, "bert": bert, "gpt2": gpt2, "llama": llama}


def inputs(model, gen: torch.Generator) -> tuple:
    """Positional inputs: images, or token ids (with token types for BERT)."""
    dtype = next(model.parameters()).dtype
    if model.main_input_name == "pixel_values":
        return (torch.randn(3, 2, 8, 8, generator=gen, dtype=dtype),)
    ids = torch.randint(0, 11, (3, 6), generator=gen)
    return (ids, None, torch.randint(0, 2, (3, 6), generator=gen)) if "bert" in model.config.model_type else (ids,)


def isomorphic_under(g1, g2, node_map) -> bool:
    try:
        assert_isomorphic_under(g1, g2, node_map)
    except AssertionError:
        return False
    return True


# ---- round trip, logits, tied weights ------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_roundtrip_and_logits_are_exact(name):
    model = MODELS[name]()
    g = converters.to_graph(model)
    sd = converters.from_graph(g)
    assert_bitwise_equal(sd, model.state_dict())
    fresh = MODELS[name](seed=1)
    fresh.load_state_dict(sd)
    x = inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(*x).logits, model(*x).logits)
    assert_bitwise_equal(converters.from_graph(graphnfn.collate([g, g]))[1], model.state_dict())


def test_tied_weights_fold_back_under_both_keys():
    """GPT-2's lm_head.weight is transformer.wte.weight: the embedding's and the
    head's edges each hold it and fold back into their own key."""
    model = gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    g = converters.to_graph(model)
    w = model.lm_head.weight.detach()
    for key, edge_type in (("transformer.wte.weight", EdgeType.EMBED), ("lm_head.weight", EdgeType.LINEAR)):
        edges = g.edge_group == g.spec.edge_groups.index(key)
        assert torch.all(g.edge_type[edges] == edge_type)
        assert sorted(g.edge_attr[edges, WEIGHT_COL].tolist()) == sorted(w.reshape(-1).tolist())
    assert_bitwise_equal(converters.from_graph(g), model.state_dict())


# ---- the encoding -------------------------------------------------------------------

def nodes(g, name: str) -> torch.Tensor:
    return (g.node_group == g.spec.node_groups.index(name)).nonzero().squeeze(1)


def test_llama_encoding_by_hand():
    """RMSNorm nodes, the SwiGLU product, grouped-query pairing and rotary edges."""
    model = llama()
    g = converters.to_graph(model)
    attn = "model.layers.0.self_attn"
    q, k, heads, v, mix = (nodes(g, tag(attn, r)) for r in ("q", "k", "heads", "v", "mix"))
    assert (q.numel(), k.numel(), heads.numel(), v.numel(), mix.numel()) == (16, 8, 4, 8, 16)
    assert torch.all(g.node_type[v] == NodeType.KV_VALUE) and torch.all(g.node_type[mix] == NodeType.VALUE)
    src, dst = g.edge_index
    pair = g.edge_type == EdgeType.QK_PAIR
    # query (head h, dim d) meets key (kv head h // 2, dim d)
    assert sorted(zip(src[pair].tolist(), dst[pair].tolist())) == sorted(
        (int(q[h * 4 + d]), int(k[h // 2 * 4 + d])) for h in range(4) for d in range(4))
    assert torch.all(g.edge_attr[pair, WEIGHT_COL] == 0.5)
    share = g.edge_type == EdgeType.KV_SHARE
    assert sorted(zip(src[share].tolist(), dst[share].tolist())) == sorted(
        (int(v[h // 2 * 4 + d]), int(mix[h * 4 + d])) for h in range(4) for d in range(4))
    # rotary: dim i -> dim i + 2 in every head of q and k, weight the pair's frequency
    inv_freq = model.model.rotary_emb.inv_freq
    rotary = g.edge_type == EdgeType.ROTARY
    want = {(int(ids[h * 4 + i]), int(ids[h * 4 + i + 2])): float(inv_freq[i])
            for ids, n in ((q, 4), (k, 2)) for h in range(n) for i in range(2)}
    assert dict(zip(zip(src[rotary].tolist(), dst[rotary].tolist()), g.edge_attr[rotary, WEIGHT_COL].tolist())) == want
    assert torch.all(g.x[heads, COL("causal")] == 1)
    norm = nodes(g, "model.layers.0.input_layernorm")
    assert torch.all(g.node_type[norm] == NodeType.RMS_NORM)
    into_norm = (g.edge_type == EdgeType.NORM) & torch.isin(dst, norm)
    assert torch.equal(g.edge_attr[into_norm, WEIGHT_COL], model.model.layers[0].input_layernorm.weight.detach())
    product = nodes(g, "model.layers.0.mlp.mul")
    assert torch.all(g.node_type[product] == NodeType.PRODUCT)
    gate = nodes(g, "model.layers.0.mlp.gate_proj")
    assert torch.all(g.x[gate, COL("act_silu")] == 1)
    into = (g.edge_type == EdgeType.PRODUCT) & (dst == product[5])
    assert sorted(src[into].tolist()) == [int(gate[5]), int(nodes(g, "model.layers.0.mlp.up_proj")[5])]


def test_inspect_permutes_a_gated_mlp_as_one():
    """Hidden unit j of the gate and of the up projection feed product j: one permutation moves both."""
    from graphnfn.symmetries import describe_symmetries

    lines = describe_symmetries(converters.to_graph(llama()))
    assert "layers 9 (model.layers.0.mlp.gate_proj, model.layers.0.mlp.up_proj: 12 identity/silu channels each, " \
           "permuted together): S_12" in lines


def test_gpt2_conv1d_weights_and_new_gelu():
    """Conv1D computes x @ W + b with W [in, out]: the edge from stream feature i
    to query r carries c_attn.weight[i, r]; NewGELU (written out in ops) is the
    tanh GELU, checked numerically."""
    model = gpt2()
    g = converters.to_graph(model)
    q = nodes(g, tag("transformer.h.0.attn", "q"))
    stream = nodes(g, "transformer.h.0.ln_1")
    edge = (g.edge_type == EdgeType.ATTN_Q) & (g.edge_index[0] == stream[3]) & (g.edge_index[1] == q[5])
    assert g.edge_attr[edge, WEIGHT_COL].tolist() == [model.transformer.h[0].attn.c_attn.weight[3, 5].item()]
    fc = nodes(g, "transformer.h.0.mlp.c_fc")
    assert torch.all(g.x[fc, COL("act_gelu")] == 1) and torch.all(g.x[fc, COL("act_param")] == 1)
    assert torch.all(g.x[nodes(g, tag("transformer.h.0.attn", "heads")), COL("causal")] == 1)


@pytest.mark.parametrize("name", MODELS)
def test_sdpa_and_eager_attention_give_one_graph(name):
    """scaled_dot_product_attention and the matmul-softmax pattern are the same attention."""
    model = MODELS[name]()
    g1 = converters.to_graph(model)
    model.set_attn_implementation("eager")
    g2 = converters.to_graph(model)
    assert g1.spec.node_groups == g2.spec.node_groups
    for field in ("x", "edge_index", "edge_attr", "node_type", "edge_type", "layer"):
        assert torch.equal(getattr(g1, field), getattr(g2, field)), field
    lateral = (g1.edge_type == EdgeType.QK_PAIR) | (g1.edge_type == EdgeType.ROTARY)
    src, dst = g1.edge_index
    assert torch.all(g1.layer[dst[~lateral]] > g1.layer[src[~lateral]])
    assert torch.all(g1.layer[dst[lateral]] == g1.layer[src[lateral]])


# ---- symmetries (float64) ---------------------------------------------------------------

def separate(q: str, k: str, v: str, o: str, p: dict) -> list:
    """Moves of separate q, k, v Linear projections (with biases) and W_o's columns."""
    return [(f"{m}.{t}", 0, p[r]) for m, r in ((q, "q"), (k, "k"), (v, "v")) for t in ("weight", "bias")] + [
        (f"{o}.weight", 1, p["v"])]


def gpt2_packed(p: dict, d: int) -> list:
    """Conv1D keeps W [in, out]: q|k|v are column blocks of c_attn, W_o's inputs the rows of c_proj."""
    cols = torch.cat([p["q"], d + p["k"], 2 * d + p["v"]])
    a = "transformer.h.0.attn"
    return [(f"{a}.c_attn.weight", 1, cols), (f"{a}.c_attn.bias", 0, cols), (f"{a}.c_proj.weight", 0, p["v"])]


def mlp_moves(fc1: str, fc2: str, p: torch.Tensor, conv1d: bool = False) -> list:
    return [(f"{fc1}.weight", int(conv1d), p), (f"{fc1}.bias", 0, p), (f"{fc2}.weight", 1 - int(conv1d), p)]


ATTENTION = {  # model -> (attention node group, hidden neurons of the MLP's first layer, moves of a head permutation)
    "vit": ("vit.layers.0.attention", "vit.layers.0.mlp.fc1",
            lambda p, d: separate(*(f"vit.layers.0.attention.{r}_proj" for r in "qkvo"), p)),
    "bert": ("bert.encoder.layer.0.attention.self", "bert.encoder.layer.0.intermediate.dense",
             lambda p, d: separate(*(f"bert.encoder.layer.0.attention.self.{r}" for r in ("query", "key", "value")),
                                   "bert.encoder.layer.0.attention.output.dense", p)),
    "gpt2": ("transformer.h.0.attn", "transformer.h.0.mlp.c_fc", gpt2_packed),
}
QUERY = {"vit": "vit.layers.0.attention.q_proj.weight", "bert": "bert.encoder.layer.0.attention.self.query.weight",
         "gpt2": "transformer.h.0.attn.c_attn.weight", "llama": "model.layers.0.self_attn.q_proj.weight"}
MLP_OUT = {"vit": "vit.layers.0.mlp.fc2", "bert": "bert.encoder.layer.0.output.dense", "gpt2": "transformer.h.0.mlp.c_proj"}


@pytest.mark.parametrize("name, kind", list(itertools.product(("vit", "bert", "gpt2"), ("heads", "qk", "vo", "mlp"))))
def test_symmetries_give_isomorphic_graphs(name, kind):
    model = MODELS[name]().double()
    gen = torch.Generator().manual_seed(1)
    attn, fc1, moves = ATTENTION[name]
    if kind == "mlp":
        p = torch.randperm(model.get_submodule(fc1).bias.numel(), generator=gen)
        assert_symmetry(model, mlp_moves(fc1, MLP_OUT[name], p, name == "gpt2"), {fc1: p}, inputs(model, gen))
        return
    p = head_perms(kind, 2, 4, 4, gen)
    assert_symmetry(model, moves(p, 8), node_perms(attn, p), inputs(model, gen))


def llama_moves(kind: str, gen: torch.Generator) -> tuple[list, dict]:
    """Parameter moves and node permutations of Llama's symmetries: whole key/value
    heads with their query groups (and query heads inside a group); value dims with
    W_o's columns; the gated MLP's hidden units (gate, up and product together)."""
    a, m = "model.layers.0.self_attn", "model.layers.0.mlp"
    if kind == "mlp":
        p = torch.randperm(12, generator=gen)
        moves = [(f"{m}.gate_proj.weight", 0, p), (f"{m}.up_proj.weight", 0, p), (f"{m}.down_proj.weight", 1, p)]
        return moves, {f"{m}.gate_proj": p, f"{m}.up_proj": p, f"{m}.mul": p}
    if kind == "heads":
        kv = torch.randperm(2, generator=gen)
        query_heads = torch.cat([2 * g + torch.randperm(2, generator=gen) for g in kv.tolist()])
        rows_q, rows_kv = block_perm(query_heads, 4), block_perm(kv, 4)
        moves = [(f"{a}.q_proj.weight", 0, rows_q), (f"{a}.k_proj.weight", 0, rows_kv),
                 (f"{a}.v_proj.weight", 0, rows_kv), (f"{a}.o_proj.weight", 1, rows_q)]
        return moves, {tag(a, "q"): rows_q, tag(a, "heads"): query_heads, tag(a, "k"): rows_kv,
                       tag(a, "v"): rows_kv, tag(a, "mix"): rows_q}
    dims = [torch.randperm(4, generator=gen) for _ in range(2)]  # per key/value head
    cols = within_blocks([dims[h // 2] for h in range(4)])
    return ([(f"{a}.v_proj.weight", 0, within_blocks(dims)), (f"{a}.o_proj.weight", 1, cols)],
            {tag(a, "v"): within_blocks(dims), tag(a, "mix"): cols})


@pytest.mark.parametrize("kind", ["heads", "vo", "mlp"])
def test_llama_symmetries_give_isomorphic_graphs(kind):
    model = llama().double()
    gen = torch.Generator().manual_seed(2)
    moves, perms = llama_moves(kind, gen)
    assert_symmetry(model, moves, perms, inputs(model, gen))


def test_a_query_head_moved_to_another_group_changes_function_and_graph():
    """Swapping query heads 1 and 2 (with W_o's columns) moves each into the other's
    key/value group: another function, and the QK_PAIR edges into the shared keys
    tell the graphs apart."""
    model = llama().double()
    a = "model.layers.0.self_attn"
    swap = block_perm(torch.tensor([0, 2, 1, 3]), 4)
    other = permuted(model, [(f"{a}.q_proj.weight", 0, swap), (f"{a}.o_proj.weight", 1, swap)])
    x = inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(other(*x).logits, model(*x).logits)
    g1, g2 = converters.to_graph(model), converters.to_graph(other)
    perms = {tag(a, "q"): swap, tag(a, "heads"): torch.tensor([0, 2, 1, 3]), tag(a, "mix"): swap}
    assert not isomorphic_under(g1, g2, group_node_map(g1, g2, perms))


@pytest.mark.parametrize("name", MODELS)
def test_a_changed_weight_gives_a_non_isomorphic_graph(name):
    """No node map at all makes the graph of a network with one weight changed
    equal to the original (networkx), while a permuted network's graph is isomorphic."""
    model = MODELS[name]().double()
    g = converters.to_graph(model)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.get_parameter(QUERY[name])[1, 2] += 0.25
    assert not _isomorphic(g, converters.to_graph(other))
    gen = torch.Generator().manual_seed(3)
    moves = llama_moves("mlp", gen)[0] if name == "llama" else mlp_moves(
        ATTENTION[name][1], MLP_OUT[name], torch.randperm(12 if name != "gpt2" else 32, generator=gen), name == "gpt2")
    assert _isomorphic(g, converters.to_graph(permuted(model, moves)))


def rotary_moves(sigma: torch.Tensor) -> list:
    """sigma applied to the dims of every head, jointly on q and k."""
    a = "model.layers.0.self_attn"
    return [(f"{a}.q_proj.weight", 0, within_blocks([sigma] * 4)), (f"{a}.k_proj.weight", 0, within_blocks([sigma] * 2))]


def same_structure_graphs(model, others: list) -> list:
    """The graphs of networks built like ``model`` (permuted copies), read from
    one torch.export of ``model``: exporting is most of a conversion's time and
    the exported graph does not depend on the weights."""
    from converters.hf import example_inputs
    from converters.read_export import ExportReader
    from converters.wire_program import build_graph

    exported = torch.export.export(model, (), example_inputs(model), strict=False)
    return [build_graph(ExportReader(m, exported).run(), list(m.state_dict())) for m in others]


@pytest.mark.parametrize("same_frequency", [False, True])
def test_rotary_pairs_admit_exactly_the_permutations_that_keep_the_function(same_frequency):
    """Rotary embeddings turn dims (i, i + 2) of q and k by frequency w_i per token:
    of the 24 permutations of a head's dims (jointly on q and k), those that keep
    the function are exactly those under which the graph is isomorphic (node map
    induced on q, k). Distinct frequencies: the identity alone; one frequency
    for both pairs: also swapping the pairs as wholes. Swapping inside a pair
    reverses the rotation: never a symmetry (the ROTARY edge's direction)."""
    model = llama().double()
    if same_frequency:
        model.model.rotary_emb.inv_freq.fill_(0.3)
    g = converters.to_graph(model)
    x = inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(*x).logits
    sigmas = [torch.tensor(order) for order in itertools.permutations(range(4))]
    others = [permuted(model, rotary_moves(sigma)) for sigma in sigmas]
    graphs = same_structure_graphs(model, [model] + others)
    assert isomorphic_under(g, graphs[0], torch.arange(g.num_nodes))  # the shortcut is to_graph
    a = "model.layers.0.self_attn"
    kept = []
    for sigma, other, g2 in zip(sigmas, others, graphs[1:]):
        with torch.no_grad():
            keeps = torch.allclose(other(*x).logits, want, rtol=1e-9, atol=1e-9)
        node_map = group_node_map(g, g2, {tag(a, "q"): within_blocks([sigma] * 4), tag(a, "k"): within_blocks([sigma] * 2)})
        assert keeps == isomorphic_under(g, g2, node_map), sigma
        if keeps:
            kept.append(tuple(sigma.tolist()))
    assert kept == ([(0, 1, 2, 3), (1, 0, 3, 2)] if same_frequency else [(0, 1, 2, 3)])


# ---- Transformer-NFN's format -------------------------------------------------------------

def matrices(name: str, model) -> tuple:
    """q, k, v, o, the MLP's first weight and bias and second weight and bias of block 0, weights [out, in]."""
    if name == "gpt2":  # Conv1D: W [in, out]
        block = model.transformer.h[0]
        qkv, o = block.attn.c_attn.weight.T, block.attn.c_proj.weight.T
        return (*qkv.split(8), o, block.mlp.c_fc.weight.T, block.mlp.c_fc.bias, block.mlp.c_proj.weight.T,
                block.mlp.c_proj.bias)
    if name == "vit":
        block = model.vit.layers[0]
        a, fc1, fc2 = block.attention, block.mlp.fc1, block.mlp.fc2
        return a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight, fc1.weight, fc1.bias, fc2.weight, \
            fc2.bias
    block = model.bert.encoder.layer[0]
    s, fc1, fc2 = block.attention.self, block.intermediate.dense, block.output.dense
    return s.query.weight, s.key.weight, s.value.weight, block.attention.output.dense.weight, fc1.weight, fc1.bias, \
        fc2.weight, fc2.bias


@pytest.mark.parametrize("name", ["vit", "bert", "gpt2"])
def test_encoder_blocks_in_transformer_nfn_format(name):
    """Head i's W_q [D, d_k] is the transpose of its rows of the query weight (of its
    columns of GPT-2's Conv1D), W_o[i] the transpose of its columns of the output weight."""
    model = MODELS[name]()
    ws = converters.to_attention_weight_space(model)
    q, k, v, o, fc1, b1, fc2, b2 = (t.detach() for t in matrices(name, model))
    assert ws.num_blocks == 1 and ws.query[0].shape == (1, 1, 2, 8, 4)
    for i in range(2):
        rows = slice(4 * i, 4 * i + 4)
        for got, want in ((ws.query, q[rows].T), (ws.key, k[rows].T), (ws.value, v[rows].T), (ws.out, o[:, rows].T)):
            assert torch.equal(got[0][0, 0, i], want)
    for got, want in ((ws.mlp_in, fc1.T), (ws.mlp_in_bias, b1), (ws.mlp_out, fc2.T), (ws.mlp_out_bias, b2)):
        assert torch.equal(got[0][0, 0], want)


def test_llama_blocks_name_what_the_format_lacks():
    with pytest.raises(converters.ConversionError, match=r"^model\.layers\.0\.self_attn \(LlamaAttention\).*not in the "
                       r"Transformer-NFN format: rotary position embeddings.*grouped-query attention \(2 key/value "
                       r"heads for 4 query heads.*no MLP block.*gated MLP such as SwiGLU"):
        converters.to_attention_weight_space(llama())


# ---- model directories, the API and the command line ------------------------------------------

def test_model_directory_from_the_api_and_the_command_line(tmp_path, capsys):
    from graphnfn import cli
    from graphnfn.io import load_graph

    model = gpt2()
    model.save_pretrained(tmp_path / "gpt2")
    assert (tmp_path / "gpt2" / "model.safetensors").is_file()
    assert_bitwise_equal(converters.from_graph(converters.to_graph(tmp_path / "gpt2")), model.state_dict())
    assert cli.main(["inspect", str(tmp_path / "gpt2")]) == 0
    assert "176 nodes, 1176 edges" in capsys.readouterr().out
    assert cli.main(["convert", str(tmp_path / "gpt2"), "-o", str(tmp_path / "g.safetensors")]) == 0
    assert_bitwise_equal(converters.from_graph(load_graph(tmp_path / "g.safetensors")), model.state_dict())
    assert cli.main(["draw", str(tmp_path / "gpt2"), "-o", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_model_directory_without_safetensors_weights_is_refused(tmp_path):
    model = bert()
    model.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(converters.ConversionError, match=r"without safetensors weights.*pytorch_model\.bin"):
        converters.to_graph(tmp_path)


# ---- refused, by module and aten op ---------------------------------------------------------

def _refused_models():
    t = transformers
    small = dict(vocab_size=11, max_position_embeddings=16)
    return [
        (lambda: t.GPT2LMHeadModel(t.GPT2Config(n_embd=8, n_layer=1, n_head=2, n_positions=16, vocab_size=11,
                                                activation_function="quick_gelu")),
         r"^transformer\.h\.0\.mlp\.act \(QuickGELUActivation\): aten node 'mul' \(aten\.mul\.Tensor\): a product of "
         r"a Linear's output and a constant"),
        (lambda: t.GemmaForCausalLM(t.GemmaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                                  num_key_value_heads=2, head_dim=4, intermediate_size=12, **small)),
         r"^model\.embed_tokens \(GemmaTextScaledWordEmbedding\): aten node 'mul' \(aten\.mul\.Tensor\)"),
        (lambda: t.RobertaForSequenceClassification(t.RobertaConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12, vocab_size=11,
            max_position_embeddings=20, pad_token_id=1)),
         r"^roberta\.embeddings \(RobertaEmbeddings\): aten node 'ne' \(aten\.ne\.Scalar\): unsupported operation"),
        (lambda: t.MistralForCausalLM(t.MistralConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                                      num_key_value_heads=2, intermediate_size=12, sliding_window=4,
                                                      **small)),
         r"^MistralForCausalLM: sliding_window=4 \(local attention\)"),
        (lambda: t.BertModel(t.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=12, **small)),
         r"^BertModel: returns 2 tensors"),
    ]


@pytest.mark.parametrize("make, match", _refused_models())
def test_unknown_patterns_are_refused_naming_module_and_op(make, match):
    with pytest.raises(converters.UnsupportedModuleError, match=match):
        converters.to_graph(make().eval())
