"""Model zoos: making them (SIREN INRs, Small-CNN-Zoo CNNs, small ViTs), storing
them (safetensors shards + a JSON-lines manifest, resumable), reading them and
the published zoos, and serving one split as neuron graphs or weight spaces.

    python -m graphnfn.zoo {siren,cnn,transformer} --dataset digits|fashion-mnist --out DIR
"""
from .arch import build_module
from .augment import ImageView, WeightAugment
from .cnn import make_cnn
from .editing import EDITS, edit_images
from .loaders import (
    EditedImages, GraphZooDataset, WeightSpaceZooDataset, collate_weight_spaces, editing_target, graph_loader,
    weight_space_loader,
)
from .makers import SirenRecipe, make_classifier_zoo, make_siren_zoo, siren_recipe
from .published import DWSNetsINRZoo, NFNSirenZoo, SmallCNNZoo, open_zoo
from .siren import SirenFit, coordinate_grid, fit_sirens, make_siren, render
from .source import Zoo, ZooSource
from .store import ZooStoreError
from .vit import ViT, make_vit

__all__ = [
    "make_siren_zoo", "make_classifier_zoo", "SirenRecipe", "siren_recipe", "SirenFit", "fit_sirens", "make_siren", "make_cnn", "make_vit", "ViT",
    "render", "coordinate_grid", "build_module", "Zoo", "ZooSource", "ZooStoreError", "SmallCNNZoo",
    "DWSNetsINRZoo", "NFNSirenZoo", "open_zoo", "GraphZooDataset", "WeightSpaceZooDataset", "graph_loader",
    "weight_space_loader", "collate_weight_spaces", "editing_target", "EditedImages", "WeightAugment", "ImageView",
    "EDITS", "edit_images",
]
