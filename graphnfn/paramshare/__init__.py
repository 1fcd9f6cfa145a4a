"""Parameter-sharing neural functionals (NFN, NFT, Monomial-NFN, MAGEP-NFN, Transformer-NFN),
the statistics, flat-MLP and align-linear baselines; the weight spaces they read live in
:mod:`graphnfn.spaces` and are re-exported here.

    net = graphnfn.paramshare.build("nfn-hnp", ws.spec, d_out=10)   # [B, 10]
    net = graphnfn.paramshare.build("monomial", ws.spec, 10, fourier=16)  # group from ws.spec.activations
"""
from ..spaces import (  # the data types live below both families; re-exported for the public API
    MIXED, AttentionSpec, AttentionWeightSpace, BlockDims, WeightSpace, WeightSpaceSpec, check_spec, concat, flatten,
    merge_activations, randn_space, unflatten,
)
from .align import AlignLinear, align
from .baselines import StatEdit, StatFeatures
from .elementwise import Activation, ChannelLayerNorm, ChannelMap, PointwiseMLP
from .encoding import FourierEncoding
from .equivariant_linear import EquivariantLinear, HNPLinear, MonomialLinear, NPLinear
from .magep import MAGEPLayer, PathInvariant
from .models import MODELS, WeightSpaceModel, build
from .nft import AttentionPool, NPAttention
from .pooling import HNPPool, InvariantPool, MonomialPool, NPPool
from .position import PositionEmbedding
from .probe import ProbeChannels
from .symmetry import HNP, NP, SCALE, SIGN, Group, Layout, scaling_of
from .transformer_nfn import MLPActivation, TransformerNFNInvariant, TransformerNFNLinear

__all__ = [
    "align", "AlignLinear",
    "WeightSpace", "WeightSpaceSpec", "concat", "check_spec", "merge_activations", "MIXED", "scaling_of",
    "FourierEncoding", "ProbeChannels", "AttentionWeightSpace", "AttentionSpec", "BlockDims",
    "flatten", "unflatten", "randn_space", "Group", "Layout", "NP", "HNP", "SCALE", "SIGN",
    "EquivariantLinear", "NPLinear", "HNPLinear", "MonomialLinear", "InvariantPool", "NPPool", "HNPPool",
    "MonomialPool", "PositionEmbedding", "Activation", "ChannelMap", "ChannelLayerNorm", "PointwiseMLP",
    "NPAttention", "AttentionPool", "MAGEPLayer", "PathInvariant", "TransformerNFNLinear",
    "TransformerNFNInvariant", "MLPActivation", "StatFeatures", "StatEdit", "MODELS", "WeightSpaceModel", "build",
]
