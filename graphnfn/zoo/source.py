"""Reading zoos: one interface for our zoo directories and the published formats.

A :class:`ZooSource` is a list of records (dicts with at least ``id``,
``split``, ``label`` and ``arch``) plus the weights of each entry as a
state_dict of the module that ``arch`` describes. The loaders
(:mod:`graphnfn.zoo.loaders`) take any source.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

from torch import Tensor, nn

from .arch import build_module
from .store import load_shard, read_config, read_manifest


class ZooSource:
    """Base class: subclasses set ``records`` and implement :meth:`state_dict`."""

    records: list[dict]

    def __len__(self) -> int:
        return len(self.records)

    def state_dict(self, i: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def indices(self, split: str | None = None, where: Callable[[dict], bool] | None = None) -> list[int]:
        """Positions of the records in ``split`` (all if None) that satisfy ``where``."""
        return [i for i, r in enumerate(self.records)
                if (split is None or r["split"] == split) and (where is None or where(r))]

    def arch_key(self, i: int) -> str:
        """Entry i's architecture as a string: equal strings, equal architectures."""
        return json.dumps(self.records[i]["arch"], sort_keys=True)

    def skeleton(self, i: int) -> nn.Module:
        """A module of entry i's architecture, cached per architecture: read its structure, never its weights."""
        return _skeleton(self.arch_key(i))

    def module(self, i: int) -> nn.Module:
        """Entry i as a fresh module holding its weights."""
        module = build_module(self.records[i]["arch"])
        module.load_state_dict(self.state_dict(i))
        return module


@lru_cache(maxsize=64)
def _skeleton(arch_json: str) -> nn.Module:
    return build_module(json.loads(arch_json))


def record_value(record: Mapping, key: str):
    """``record[key]``; a dotted key reads nested dicts (``metrics.test_accuracy``)."""
    value = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"zoo record {record.get('id')} has no {key!r}")
        value = value[part]
    return value


class Zoo(ZooSource):
    """A zoo directory written by :mod:`graphnfn.zoo.makers` (see :mod:`graphnfn.zoo.store`).

    ``zoo.config`` is the request that made it; ``zoo.records`` the manifest in id
    order; ``zoo.state_dict(i)`` the weights of entry i (shards load lazily and stay cached)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = read_config(self.root)
        self.records = read_manifest(self.root)
        self._shards: dict[int, dict[str, Tensor]] = {}

    def state_dict(self, i: int) -> dict[str, Tensor]:
        record = self.records[i]
        if record["shard"] not in self._shards:
            self._shards[record["shard"]] = load_shard(self.root, record["shard"])
        return {k: v[record["row"]] for k, v in self._shards[record["shard"]].items()}
