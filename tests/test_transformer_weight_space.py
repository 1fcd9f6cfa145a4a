"""converters.to_attention_weight_space: the Transformer-NFN input format."""
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import converters
from converters.reference_nets import GPT
from graphnfn.modules import ViT
from graphnfn import EdgeType
from graphnfn.paramshare import AttentionWeightSpace
from nets import assert_bitwise_equal


def heads_output(ws: AttentionWeightSpace, block: int, x: torch.Tensor) -> torch.Tensor:
    """sum_i softmax((X W_q[i])(X W_k[i])^T / sqrt(d_k)) (X W_v[i]) W_o[i]: the
    format's row-vector convention, x [T, D]."""
    q, k, v, o = (f[block][0, 0] for f in (ws.query, ws.key, ws.value, ws.out))
    logits = torch.einsum("td,hde->hte", x, q) @ torch.einsum("td,hde->hte", x, k).transpose(1, 2)
    attn = (logits / q.size(-1) ** 0.5).softmax(-1)
    return torch.einsum("hts,hse,hed->td", attn, torch.einsum("td,hde->hte", x, v), o)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 3), st.booleans(), st.integers(0, 2**16))
def test_blocks_reproduce_attention_and_mlp(heads, d, hidden, depth, norm_first, seed):
    torch.manual_seed(seed)
    e = heads * d
    layer = nn.TransformerEncoderLayer(e, heads, hidden, dropout=0.0, bias=False, norm_first=norm_first,
                                       batch_first=True)
    model = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False).double()
    ws = converters.to_attention_weight_space(model)
    assert ws.num_blocks == depth and ws.batch_size == 1
    assert ws.query[0].shape == (1, 1, heads, e, d) and ws.out[0].shape == (1, 1, heads, d, e)
    assert ws.mlp_in[0].shape == (1, 1, e, hidden) and ws.mlp_out_bias[0].shape == (1, 1, e)
    x = torch.randn(5, e, dtype=torch.float64)
    for i, block in enumerate(model.layers):
        want = block.self_attn(x[None], x[None], x[None])[0][0]
        torch.testing.assert_close(heads_output(ws, i, x), want)
        mlp = torch.relu(x @ ws.mlp_in[i][0, 0] + ws.mlp_in_bias[i][0, 0]) @ ws.mlp_out[i][0, 0] + ws.mlp_out_bias[i][0, 0]
        torch.testing.assert_close(mlp, block.linear2(torch.relu(block.linear1(x))))


def test_hand_written_blocks_and_dtype():
    torch.manual_seed(0)
    vit = ViT(image_size=4, patch=2, in_channels=1, dim=6, depth=2, heads=3, num_classes=2, packed=False)
    ws = converters.to_attention_weight_space(vit)
    assert ws.num_blocks == 2 and ws.value[1].shape == (1, 1, 3, 6, 2) and ws.mlp_in[0].shape == (1, 1, 6, 24)
    assert torch.equal(ws.key[1][0, 0, 2], vit.blocks[1].attn.k.weight.detach()[4:6].T)
    assert torch.equal(ws.out[0][0, 0, 1], vit.blocks[0].attn.o.weight.detach()[:, 2:4].T)
    assert torch.equal(ws.mlp_out_bias[1][0, 0], vit.blocks[1].mlp[2].bias.detach())
    gpt = converters.to_attention_weight_space(GPT(vocab=5, context=3, dim=4, depth=1, heads=2).half())
    assert gpt.query[0].dtype == torch.float32  # half precision widens, as in the graph


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, kdim=3, vdim=3, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x, memory):
        return self.fc2(torch.relu(self.fc1(self.attn(x, memory, memory)[0])))


def test_cross_attention_converts_to_a_graph():
    """Outside the format, but to_graph wires q from x and k, v from the second input."""
    torch.manual_seed(0)
    m = CrossAttention()
    g = converters.to_graph(m)
    assert_bitwise_equal(converters.from_graph(g), m.state_dict())
    k_sources = g.node_group[g.edge_index[0, g.edge_type == EdgeType.ATTN_K]].unique().tolist()
    assert [g.spec.node_groups[i] for i in k_sources] == ["input:memory"]


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "no attention layer"),
    (nn.MultiheadAttention(4, 2), "no MLP block"),
    (CrossAttention(), "self-attention"),
])
def test_networks_outside_the_format_are_refused(model, match):
    with pytest.raises(converters.ConversionError, match=match):
        converters.to_attention_weight_space(model)
