"""graphnfn: learning on neural-network weights."""
from .graph import (
    EDGE_META, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, GraphSpec, NeuralGraph, NodeType, ParamEntry,
    collate, pad_kernels,
)
from .modules import Sine
from . import paramshare

__all__ = [
    "NeuralGraph", "collate", "pad_kernels", "NodeType", "EdgeType", "Activation", "GraphSpec", "ParamEntry",
    "NODE_FEATURES", "EDGE_META", "WEIGHT_COL", "Sine", "paramshare",
]
