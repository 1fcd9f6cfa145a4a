"""graphnfn: learning on neural-network weights."""
from .graph import (
    EDGE_META, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, GraphSpec, NeuralGraph, NodeType, ParamEntry,
    collate,
)
from .modules import Sine
from . import paramshare

__all__ = [
    "NeuralGraph", "collate", "NodeType", "EdgeType", "Activation", "GraphSpec", "ParamEntry",
    "NODE_FEATURES", "EDGE_META", "WEIGHT_COL", "Sine", "paramshare",
]
