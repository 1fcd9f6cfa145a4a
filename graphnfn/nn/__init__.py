"""Graph layers on neuron graphs (PyG style: one class per layer)."""
from .attention import SparseRelationalAttention
from .pna import EdgePNAConv, PNARelation

__all__ = ["EdgePNAConv", "PNARelation", "SparseRelationalAttention"]
