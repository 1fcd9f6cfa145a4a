"""Parameter-sharing neural functionals (NFN, NFT, Monomial-NFN, MAGEP-NFN, Transformer-NFN),
the statistics and flat-MLP baselines, and their weight spaces.

    net = graphnfn.paramshare.build("nfn-hnp", ws.spec, d_out=10)   # [B, 10]
    net = graphnfn.paramshare.build("monomial", ws.spec, 10, fourier=16)  # group from ws.spec.activations
"""
from .align import AlignLinear, align
from .attention_space import AttentionSpec, AttentionWeightSpace, BlockDims
from .baselines import StatEdit, StatFeatures
from .containers import flatten, randn_space, unflatten
from .elementwise import Activation, ChannelLayerNorm, ChannelMap, PointwiseMLP
from .encoding import FourierEncoding
from .equivariant_linear import EquivariantLinear, HNPLinear, MonomialLinear, NPLinear
from .magep import MAGEPLayer, PathInvariant
from .models import MODELS, WeightSpaceModel, build
from .nft import AttentionPool, NPAttention
from .pooling import HNPPool, InvariantPool, MonomialPool, NPPool
from .position import PositionEmbedding
from .symmetry import HNP, NP, SCALE, SIGN, Group, Layout, scaling_of
from .transformer_nfn import MLPActivation, TransformerNFNInvariant, TransformerNFNLinear
from .weight_space import MIXED, WeightSpace, WeightSpaceSpec, check_spec, concat, merge_activations

__all__ = [
    "align", "AlignLinear",
    "WeightSpace", "WeightSpaceSpec", "concat", "check_spec", "merge_activations", "MIXED", "scaling_of",
    "FourierEncoding", "AttentionWeightSpace", "AttentionSpec", "BlockDims",
    "flatten", "unflatten", "randn_space", "Group", "Layout", "NP", "HNP", "SCALE", "SIGN",
    "EquivariantLinear", "NPLinear", "HNPLinear", "MonomialLinear", "InvariantPool", "NPPool", "HNPPool",
    "MonomialPool", "PositionEmbedding", "Activation", "ChannelMap", "ChannelLayerNorm", "PointwiseMLP",
    "NPAttention", "AttentionPool", "MAGEPLayer", "PathInvariant", "TransformerNFNLinear",
    "TransformerNFNInvariant", "MLPActivation", "StatFeatures", "StatEdit", "MODELS", "WeightSpaceModel", "build",
]
