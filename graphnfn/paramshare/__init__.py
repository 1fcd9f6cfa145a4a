"""Parameter-sharing neural functionals (NFN, NFT, ...) and their weight spaces."""
from .weight_space import WeightSpace, WeightSpaceSpec, concat

__all__ = ["WeightSpace", "WeightSpaceSpec", "concat"]
