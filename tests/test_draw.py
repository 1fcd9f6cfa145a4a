"""graphnfn.draw colours each edge by its own weight."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import converters  # noqa: E402
from graphnfn.draw import draw_graph, plot_graph  # noqa: E402


def test_each_edge_gets_its_own_colour(tmp_path):
    """A 2-3 MLP with weight +1 from input 0 and -1 from input 1: the colour value drawn at each
    segment must be the sign of the input it starts from."""
    net = nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -1.0]] * 3))
    g = converters.to_graph(net)
    fig, ax = plt.subplots()
    lines, _ = plot_graph(g, ax)
    starts = [float(seg[0][1]) for seg in lines.get_segments()]  # y of each segment's source neuron
    colours = lines.get_colors()  # RGBA per segment; coolwarm: +1 red, -1 blue
    assert len(starts) == len(colours) == g.num_edges == 6
    top = max(starts)  # input neuron 0 is drawn above input neuron 1
    assert [bool(c[0] > c[2]) for c in colours] == [y == top for y in starts]
    plt.close(fig)
    draw_graph(g, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
