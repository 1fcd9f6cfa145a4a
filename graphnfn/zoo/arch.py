"""Architecture records: the small dict each manifest entry carries to rebuild its module.

``{"name": "siren", "widths": [2, 32, 32, 1], "w0": 30.0}``,
``{"name": "cnn", "in_channels": 1, "num_classes": 10, "activation": "relu", "dropout": 0.1, "padding": 1}``,
``{"name": "vit", "image_size": 8, "in_channels": 1, "num_classes": 10, "dropout": 0.0, "patch": 2}``.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from .cnn import make_cnn
from .siren import make_siren
from .vit import make_vit

BUILDERS = {"siren": make_siren, "cnn": make_cnn, "vit": make_vit}


def build_module(arch: Mapping) -> nn.Module:
    """An untrained module of the recorded architecture (load a state_dict into it)."""
    kwargs = dict(arch)
    name = kwargs.pop("name", None)
    if name not in BUILDERS:
        raise ValueError(f"unknown architecture {name!r} in zoo record; expected one of {sorted(BUILDERS)}")
    return BUILDERS[name](**kwargs)
