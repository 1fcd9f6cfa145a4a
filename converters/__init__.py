"""Checkpoints -> neuron graphs (and back, bit-exact) and weight-space tensors."""
from .convert import to_attention_weight_space, to_graph, to_weight_space
from .errors import (CheckpointNotFoundError, ConversionError, NonFiniteWeightError, UnsafeCheckpointError,
                     UnsupportedModuleError)
from .fold import from_graph
from .load import load_checkpoint

__all__ = [
    "to_graph", "from_graph", "to_weight_space", "to_attention_weight_space", "load_checkpoint",
    "ConversionError", "UnsupportedModuleError", "NonFiniteWeightError", "UnsafeCheckpointError",
    "CheckpointNotFoundError",
]
