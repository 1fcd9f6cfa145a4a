"""Weight spaces: networks as plain tuples of tensors, the data type below both model families.

:class:`WeightSpace` (chains of Linear/Conv layers) and :class:`AttentionWeightSpace`
(transformer encoder blocks), their specs (shapes without batch and channel dims) and the
helpers every container shares. ``converters.to_weight_space`` makes them; the
parameter-sharing models (:mod:`graphnfn.paramshare`, which re-exports these names) read
them. Nothing here imports a model.
"""
from .attention_space import AttentionSpec, AttentionWeightSpace, BlockDims
from .containers import Spec, Space, flatten, num_entries, randn_space, rebuild, shapes, tensors, unflatten, validated
from .weight_space import MIXED, WeightSpace, WeightSpaceSpec, check_spec, concat, merge_activations

__all__ = [
    "WeightSpace", "WeightSpaceSpec", "AttentionWeightSpace", "AttentionSpec", "BlockDims", "Spec", "Space",
    "MIXED", "merge_activations", "concat", "check_spec", "flatten", "unflatten", "randn_space", "rebuild",
    "shapes", "tensors", "num_entries", "validated",
]
