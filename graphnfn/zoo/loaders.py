"""One zoo split, two views: neuron graphs and weight spaces, on the same examples.

``GraphZooDataset(source, split)[j]`` is entry ``indices[j]`` as a
:class:`graphnfn.NeuralGraph` (``converters.to_graph``) with its target in
``g.y`` ([1] for a scalar target, [1, *shape] for a tensor target) and its
position in the source in ``g.zoo_entry``;
``WeightSpaceZooDataset(source, split)[j]`` is the same entry as
``(WeightSpace with batch 1, target)`` (``converters.to_weight_space``; for
ViTs an ``AttentionWeightSpace`` from ``converters.to_attention_weight_space``).
:func:`graph_loader` batches graphs with :func:`graphnfn.collate` (any mix of
architectures); :func:`weight_space_loader` stacks weight spaces with
:func:`graphnfn.paramshare.concat` ([B, 1, ...] tensors) and targets to [B, ...].
Both apply the same optional :class:`~graphnfn.zoo.augment.WeightAugment`, and with ``phase``
the same :func:`~graphnfn.zoo.augment.canonical_phase` (after the augmentation).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import converters
from graphnfn.graph import NeuralGraph, collate
from graphnfn.paramshare import AttentionWeightSpace, WeightSpace, concat

from .augment import ImageView, WeightAugment, canonical_phase
from .editing import edit_images
from .source import Zoo, ZooSource, record_value
from .templates import ConversionTemplates

Target = str | Callable[[dict], object]
_DATASET_KEYS = ("indices", "target", "augment", "phase")  # what the loaders hand their dataset


class _ZooItems(Dataset):
    """Entries of a source chosen by split (or explicit indices), as modules holding their (augmented) weights.

    ``augment``: a :class:`~graphnfn.zoo.augment.WeightAugment` drawn anew at every access;
    ``phase``: every entry in :func:`~graphnfn.zoo.augment.canonical_phase` form (after ``augment``)."""

    def __init__(self, source: ZooSource, split: str | None = None, indices: Sequence[int] | None = None,
                 target: Target = "label", augment: WeightAugment | None = None, phase: bool = False):
        self.source = source
        self.indices = list(indices) if indices is not None else source.indices(split)
        if not self.indices:
            raise ValueError(f"zoo has no entries in split {split!r}")
        self.target = target
        self.augment = augment
        self.phase = phase

    def __len__(self) -> int:
        return len(self.indices)

    def _target(self, i: int, view: ImageView | None = None) -> Tensor:
        record = self.source.records[i]
        if not callable(self.target):
            return torch.as_tensor(record_value(record, self.target))
        moves = view is not None and getattr(self.target, "moves_with_view", False)
        return torch.as_tensor(self.target(record, view) if moves else self.target(record))

    def _item(self, i: int, templates: ConversionTemplates):
        """(entry i converted, its target). One full conversion per architecture
        (:mod:`.templates`). A target that declares ``moves_with_view`` (:class:`EditedImages`)
        is computed for the :class:`~graphnfn.zoo.augment.ImageView` the augmentation drew;
        any other (a label, an accuracy) stays."""
        # a fresh module per item: converters may hand out views of its parameters
        module, view = self.source.module(i), None
        if self.augment is not None or self.phase:
            state = module.state_dict()
            if self.augment is not None:
                state, view = self.augment.apply(module, state)
            if self.phase:
                state = canonical_phase(module, state)
            module.load_state_dict(state)
        return templates(self.source.arch_key(i), module), self._target(i, view)


class GraphZooDataset(_ZooItems):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.templates = ConversionTemplates(converters.to_graph)

    def __getitem__(self, j: int) -> NeuralGraph:
        i = self.indices[j]
        g, target = self._item(i, self.templates)
        g.y = target.unsqueeze(0)
        g.zoo_entry = torch.tensor([i])  # position in the source (not named *index*: PyG would offset it)
        return g


class WeightSpaceZooDataset(_ZooItems):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.templates = ConversionTemplates(converters.to_weight_space)
        self.attention_templates = ConversionTemplates(converters.to_attention_weight_space)

    def __getitem__(self, j: int) -> tuple[WeightSpace | AttentionWeightSpace, Tensor]:
        i = self.indices[j]
        vit = self.source.records[i]["arch"]["name"] == "vit"
        return self._item(i, self.attention_templates if vit else self.templates)


def collate_weight_spaces(items: Sequence[tuple[WeightSpace | AttentionWeightSpace, Tensor]]):
    """[(space with batch 1, target)] -> (space with batch B, targets [B, ...]); spaces are
    :class:`WeightSpace` s (MLP/CNN) or :class:`AttentionWeightSpace` s (transformers)."""
    spaces, targets = zip(*items)
    if isinstance(spaces[0], WeightSpace):
        return concat(spaces, 0), torch.stack(targets)
    fields = (tuple(torch.cat(per_block, 0) for per_block in zip(*field)) for field in zip(*spaces))
    return type(spaces[0])(*fields), torch.stack(targets)


def graph_loader(source: ZooSource, split: str | None = None, batch_size: int = 32, shuffle: bool = False,
                 **kwargs) -> DataLoader:
    """A DataLoader of :class:`torch_geometric.data.Batch` es (``batch.y`` [B, ...]).
    ``kwargs``: ``indices``, ``target``, ``augment``, ``phase`` (see :class:`GraphZooDataset`), or DataLoader
    options."""
    ds_kw = {k: kwargs.pop(k) for k in _DATASET_KEYS if k in kwargs}
    return DataLoader(GraphZooDataset(source, split, **ds_kw), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate, **kwargs)


def weight_space_loader(source: ZooSource, split: str | None = None, batch_size: int = 32, shuffle: bool = False,
                        **kwargs) -> DataLoader:
    """A DataLoader of ``(WeightSpace [B, 1, ...], targets [B, ...])``; arguments as :func:`graph_loader`."""
    ds_kw = {k: kwargs.pop(k) for k in _DATASET_KEYS if k in kwargs}
    return DataLoader(WeightSpaceZooDataset(source, split, **ds_kw), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate_weight_spaces, **kwargs)


class EditedImages:
    """A ``target`` for the loaders: the edited source image of a SIREN zoo entry,
    [1, R, R] in [0, 1] at the zoo's resolution (the data set is read once, on first use).

    ``target(record, view)``: the source image moved by the
    :class:`~graphnfn.zoo.augment.ImageView` first, then edited, which is what the moved INR
    should draw (moving the edited image instead would be wrong for an edit whose window is
    not symmetric, such as the 2x2 erosion)."""

    moves_with_view = True

    def __init__(self, zoo: Zoo, edit: str, data_dir: str | None = None):
        if zoo.config.get("kind") != "siren":
            raise ValueError(f"{zoo.root}: editing targets need a SIREN zoo, this is a {zoo.config.get('kind')!r} zoo")
        if zoo.config.get("dataset") is None:  # the published INR zoos ship without their source images
            raise ValueError(f"{zoo.root}: editing targets need the zoo's source images, and this zoo names "
                             "no data set")
        self.zoo, self.edit, self.data_dir = zoo, edit, data_dir
        self._images: Tensor | None = None
        self._edited: Tensor | None = None

    def _sources(self) -> Tensor:
        if self._images is None:
            from graphnfn.datasets import load_dataset

            images = load_dataset(self.zoo.config["dataset"], self.data_dir).images
            res = self.zoo.config["hparams"]["resolution"]
            if images.size(-1) != res:
                images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=True)
            self._images = images
        return self._images

    def __call__(self, record: dict, view: ImageView | None = None) -> Tensor:
        if view is not None:
            return edit_images(view.image(self._sources()[record["image"]]), self.edit)
        if self._edited is None:
            self._edited = edit_images(self._sources(), self.edit)
        return self._edited[record["image"]]


def editing_target(zoo: Zoo, edit: str, data_dir: str | None = None) -> EditedImages:
    """The loaders' ``target`` for editing ``zoo``'s INRs with ``edit`` (:class:`EditedImages`)."""
    return EditedImages(zoo, edit, data_dir)
