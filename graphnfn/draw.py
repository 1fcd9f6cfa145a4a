"""A layered picture of a (small) neuron graph: layers left to right, neurons
top to bottom, edge colour = weight (mean kernel value for convolutions)."""
from __future__ import annotations

import os

import torch

from .graph import EDGE_COL, WEIGHT_COL, NeuralGraph, NodeType

NODE_COLOURS = {NodeType.INPUT: "tab:green", NodeType.HIDDEN: "tab:gray", NodeType.OUTPUT: "tab:purple",
                NodeType.NORM: "tab:orange", NodeType.FLATTEN: "tab:olive"}


def edge_values(g: NeuralGraph) -> torch.Tensor:
    """[E] the weight of each edge, the mean of its true kernel for convolutions."""
    size = (g.edge_attr[:, EDGE_COL["kernel_h"]] * g.edge_attr[:, EDGE_COL["kernel_w"]]).clamp(min=1)
    return g.edge_attr[:, WEIGHT_COL:].sum(1) / size


def plot_graph(g: NeuralGraph, ax):
    """Draw ``g`` on the matplotlib axes ``ax``: layers left to right, neurons top to bottom,
    edges coloured by :func:`edge_values`. Returns the edges' ``LineCollection`` (segment k is
    edge k of ``g.edge_index``, its value ``edge_values(g)[k]``) and the colour limit."""
    import matplotlib.pyplot as plt
    import networkx as nx

    layer, neuron = g.layer.tolist(), g.neuron.tolist()
    heights = torch.zeros(int(g.layer.max()) + 1).scatter_reduce(0, g.layer, g.neuron.float() + 1, "amax")
    pos = {i: (layer[i], heights[layer[i]].item() / 2 - neuron[i]) for i in range(g.num_nodes)}
    edges = [tuple(e) for e in g.edge_index.T.tolist()]
    G = nx.MultiDiGraph()
    G.add_nodes_from(range(g.num_nodes))
    G.add_edges_from(edges)
    values = edge_values(g).tolist()
    limit = max((abs(v) for v in values), default=0.0) or 1.0
    # the edge list is passed with the colours: networkx would otherwise draw G.edges() in its own order
    lines = nx.draw_networkx_edges(G, pos, edgelist=edges, ax=ax, edge_color=values, edge_cmap=plt.cm.coolwarm,
                                   edge_vmin=-limit, edge_vmax=limit, arrows=False, width=1.0, alpha=0.8)
    node_colour = [NODE_COLOURS.get(NodeType(t), "tab:blue") for t in g.node_type.tolist()]
    nx.draw_networkx_nodes(G, pos, ax=ax, node_color=node_colour, node_size=60 if g.num_nodes < 200 else 12)
    return lines, limit


def draw_graph(g: NeuralGraph, path: str | os.PathLike, max_edges: int = 20_000, title: str | None = None) -> None:
    """Save a drawing of ``g`` to ``path`` (PNG, PDF or SVG by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if g.num_edges > max_edges:
        raise ValueError(f"the graph has {g.num_edges:,} edges; drawings are for small networks (max_edges={max_edges:,})")
    depth = int(g.layer.max()) + 1
    tallest = int(torch.bincount(g.layer).max())
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * depth), max(4.0, min(14.0, tallest * 0.3))))
    _, limit = plot_graph(g, ax)
    for t, colour in NODE_COLOURS.items():
        if bool((g.node_type == t).any()):
            ax.scatter([], [], c=colour, label=t.name.lower())
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(plt.cm.ScalarMappable(cmap=plt.cm.coolwarm, norm=plt.Normalize(-limit, limit)), ax=ax,
                 label="weight (mean kernel value)")
    ax.set_title(title or f"{g.num_nodes} nodes, {g.num_edges} edges")
    ax.set_xlabel("layer")
    ax.set_xticks(range(depth))
    ax.tick_params(bottom=True, labelbottom=True)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)
