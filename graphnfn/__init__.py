"""graphnfn: learning on neural-network weights.

The data types (:class:`NeuralGraph`, the weight spaces of :mod:`graphnfn.spaces`) load with
the package; the model families and tools (``graphnfn.models``, ``graphnfn.paramshare``,
``graphnfn.zoo``, ``graphnfn.io``, ...) load on first use, so that ``import converters``
(which needs only the data types) loads no model.
"""
import importlib
from importlib.metadata import PackageNotFoundError, version

from .graph import (
    EDGE_META, NODE_FEATURES, WEIGHT_COL, Activation, EdgeType, GraphSpec, NeuralGraph, NodeType, ParamEntry,
    collate, pad_kernels,
)
from .modules import Sine
from . import spaces

try:
    __version__ = version("graphnfn")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: public submodules, imported on first attribute access (PEP 562)
SUBMODULES = ("canonical", "datasets", "devices", "draw", "execute", "features", "fourier", "io", "models", "nn",
              "paramshare", "probe_baseline", "registry", "sign_model", "symmetries", "trained", "training", "zoo")

__all__ = [
    "NeuralGraph", "collate", "pad_kernels", "NodeType", "EdgeType", "Activation", "GraphSpec", "ParamEntry",
    "NODE_FEATURES", "EDGE_META", "WEIGHT_COL", "Sine", "spaces", "__version__", "load_model", *SUBMODULES,
]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "load_model":  # graphnfn.load_model(run_dir): a trained weight-space model
        return importlib.import_module(".trained", __name__).load_model
    raise AttributeError(f"module 'graphnfn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES) | {"load_model"})
