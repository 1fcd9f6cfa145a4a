"""Graph layers on neuron graphs (PyG style: one class per layer)."""
from .attention import SparseRelationalAttention
from .pna import EdgePNAConv, PNARelation
from .sign import SignEquivariantConv

__all__ = ["EdgePNAConv", "PNARelation", "SignEquivariantConv", "SparseRelationalAttention"]
