"""Parameter-sharing neural functionals (NFN, NFT, ...) and their weight spaces."""
from .attention_space import AttentionWeightSpace
from .weight_space import WeightSpace, WeightSpaceSpec, concat

__all__ = ["AttentionWeightSpace", "WeightSpace", "WeightSpaceSpec", "concat"]
