"""Many workers on one zoo directory: which share of the plan a worker makes, and checking the result.

Worker I of N makes the shards s with s % N == I (:meth:`graphnfn.zoo.store.ZooWriter.owns`),
so the N commands of a Slurm array or the N ranks of ``torchrun`` fill one directory
between them; :func:`verify` then checks that every entry of the plan is there exactly once.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .store import MANIFEST, SHARDS, read_config, read_shard_records, shard_path


def worker_share(num_shards: int | None = None, shard_index: int | None = None) -> tuple[int, int]:
    """(N, I): the flags when given, else torchrun's ``WORLD_SIZE`` / ``RANK``, else (1, 0)."""
    if (num_shards is None) != (shard_index is None):
        raise ValueError("give --num-shards and --shard-index together (or neither: torchrun's WORLD_SIZE and RANK)")
    if num_shards is None:
        num_shards, shard_index = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} of {num_shards} shards: need num_shards >= 1 and "
                         "0 <= shard_index < num_shards")
    return num_shards, shard_index


def worker_device(device: str) -> str:
    """``auto`` / ``cuda`` under torchrun on a GPU machine: this rank's own GPU (``LOCAL_RANK``)."""
    if "LOCAL_RANK" in os.environ and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def _plan(config: dict) -> tuple[int, int, int]:
    """(items, entries per item, items per shard) of one of our zoos' configs."""
    if config.get("kind") == "siren":
        return config["size"], 1, config["shard_size"]
    if config.get("kind") in ("cnn", "transformer"):
        return config["networks"], len(config["checkpoints"]), config["shard_size"]
    raise ValueError(f"zoo kind {config.get('kind')!r}: verify knows siren, cnn and transformer zoos")


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, x in enumerate(indices):
        start = x if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


@dataclass
class Report:
    """What :func:`verify` found: ``problems`` (empty: complete and unique) and harmless ``notes``."""

    entries: int
    shards: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str | os.PathLike) -> Report:
    """Check a zoo directory against its plan (zoo.json): every shard present, each shard's
    records the ids its place in the plan gives, rows matching its tensors, and the manifest
    holding every record of the shards exactly once (and nothing else)."""
    root = Path(root)
    config = read_config(root)
    items, per_item, shard_size = _plan(config)
    n_shards = math.ceil(items / shard_size)
    report = Report(items * per_item, n_shards)
    present = sorted(int(p.name[6:11]) for p in (root / SHARDS).glob("shard-*.safetensors"))
    missing = sorted(set(range(n_shards)) - set(present))
    if missing:
        report.problems.append(f"{len(missing)} of {n_shards} shards missing: {_ranges(missing)}")
    extra = [s for s in present if s >= n_shards]
    if extra:
        report.problems.append(f"shards beyond the plan's {n_shards}: {_ranges(extra)}")
    by_id = {}
    for s in present:
        records = read_shard_records(shard_path(root, s))
        lo, hi = s * shard_size * per_item, min(items, (s + 1) * shard_size) * per_item
        if sorted(r["id"] for r in records) != list(range(lo, hi)):
            report.problems.append(f"shard {s}: holds ids other than {lo}..{hi - 1}")
        if [r["row"] for r in records] != list(range(len(records))) or any(r["shard"] != s for r in records):
            report.problems.append(f"shard {s}: records out of row order or naming another shard")
        with safe_open(str(shard_path(root, s)), framework="pt") as f:
            rows = {f.get_slice(k).get_shape()[0] for k in f.keys()}
        if rows != {len(records)}:
            report.problems.append(f"shard {s}: {len(records)} records but tensors of {sorted(rows)} rows")
        by_id.update({r["id"]: r for r in records})
    lines = (root / MANIFEST).read_text().split("\n") if (root / MANIFEST).exists() else [""]
    if lines[-1]:
        report.problems.append("manifest: its last line is cut short (a writer was killed mid-append; "
                               "rerunning any worker repairs it)")
    seen: dict[int, int] = {}
    for line in filter(str.strip, lines[:-1]):
        record = json.loads(line)
        seen[record["id"]] = seen.get(record["id"], 0) + 1
        if by_id.get(record["id"], record) != record:
            report.problems.append(f"manifest: entry {record['id']} differs from its shard's header")
    twice = sorted(i for i, n in seen.items() if n > 1)
    if twice:
        report.problems.append(f"manifest: {len(twice)} entries listed more than once: {_ranges(twice)}")
    unlisted = sorted(set(by_id) - set(seen))
    if unlisted:
        report.problems.append(f"manifest: {len(unlisted)} entries of the shards not listed (a worker was killed "
                               f"between rename and append; rerunning any worker repairs it): {_ranges(unlisted)}")
    orphans = sorted(set(seen) - set(by_id))
    if orphans:
        report.problems.append(f"manifest: {len(orphans)} entries without a shard: {_ranges(orphans)}")
    stale = sorted(p.name for p in (root / SHARDS).glob("*.tmp-*"))
    if stale:
        report.notes.append(f"{len(stale)} temporary files of running or killed workers (never part of the zoo; "
                            f"rerunning that worker removes them): {', '.join(stale[:5])}")
    return report
