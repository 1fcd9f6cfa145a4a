"""One directory per zoo: safetensors shards, a JSON-lines manifest, the zoo's config.

Layout::

    DIR/zoo.json                    what was asked for (kind, data set, seed, settings)
    DIR/shards/shard-00000.safetensors
                                    tensors: the state_dict entries of the shard's
                                    networks stacked along a new leading dim; the
                                    shard's manifest records ride in its header
    DIR/manifest.jsonl              one JSON record per network (or checkpoint):
                                    id, shard, row, split, label, seed, hparams, metrics, arch

Writing is atomic and resumable: a shard is written under a temporary name and
renamed into place (a shard file either is complete or does not exist), then its
records are appended to the manifest. When a writer opens a directory it
removes stale temporary files and rebuilds the manifest from the shard headers
if the two disagree (a kill between the rename and the append, or in the
middle of an append), so a rerun after ``kill -9`` never duplicates or loses an
entry. A lock file keeps two writers out of one directory.

Many workers may fill one directory together (``num_shards`` = N workers, this one
``shard_index`` = I: it makes the shards s with s % N == I). They hold the
directory lock shared (a writer without shards holds it alone) and each its own
``.lock-I-of-N``; a shard's rename and its manifest append, the config check
and the manifest repair happen under one short ``.manifest.lock``, so a repair
never races an append. Each worker's temporary shard files carry its own tag
and only it (or a writer holding the directory alone) removes them. The locks
are ``flock`` locks: across machines the filesystem must support them (NFSv4,
Lustre mounted with ``-o flock``, GPFS).
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

CONFIG, MANIFEST, SHARDS, LOCK, MANIFEST_LOCK = "zoo.json", "manifest.jsonl", "shards", ".lock", ".manifest.lock"
FORMAT_VERSION = 1


class ZooStoreError(RuntimeError):
    """A zoo directory that does not match the request or is damaged."""


def shard_path(root: Path, index: int) -> Path:
    return root / SHARDS / f"shard-{index:05d}.safetensors"


def _write_synced(tmp: Path, write) -> None:
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    _write_synced(tmp, write)
    os.replace(tmp, path)


def _dump_lines(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def read_shard_records(path: Path) -> list[dict]:
    """The manifest records stored in a shard's safetensors header."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "records" not in meta:
        raise ZooStoreError(f"{path}: shard without records in its header (not written by graphnfn.zoo?)")
    return json.loads(meta["records"])


def _try_lock(path: Path, mode: int, message: str, wait: bool = False):
    """The lock on ``path``; if another process holds it, ZooStoreError(message), or with ``wait``
    the message and then a wait for the lock."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            handle.close()
            raise ZooStoreError(message) from None
        print(f"{message}; waiting for it", flush=True)
        fcntl.flock(handle, mode)
    return handle


class ZooWriter:
    """Opens (or creates) a zoo directory for writing.

    ``config`` must equal the one stored by an earlier run in the same directory:
    a rerun resumes only the same request. ``num_shards`` > 1: this writer is
    worker ``shard_index`` of that many on the directory (:meth:`owns`). ``wait``: while
    another lone writer holds the directory, wait for it (then resume what it left)
    instead of raising."""

    def __init__(self, root: str | os.PathLike, config: Mapping[str, Any], num_shards: int = 1,
                 shard_index: int = 0, wait: bool = False):
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} of num_shards {num_shards}: need 0 <= index < num_shards")
        self.root = Path(root)
        self.num_shards, self.shard_index = num_shards, shard_index
        (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
        sharded = num_shards > 1
        self._locks = [_try_lock(self.root / LOCK, fcntl.LOCK_SH if sharded else fcntl.LOCK_EX,
                                 f"{self.root}: another process is writing this zoo"
                                 + (" without --num-shards" if sharded else ""), wait and not sharded)]
        if sharded:
            try:
                self._locks.append(_try_lock(self.root / f"{LOCK}-{shard_index}-of-{num_shards}", fcntl.LOCK_EX,
                                             f"{self.root}: worker {shard_index} of {num_shards} is already running"))
            except ZooStoreError:
                self.close()
                raise
        # a tag of this worker, not of this process, so that its rerun finds what a killed run left
        self._tag = f"w{shard_index}of{num_shards}" if sharded else str(os.getpid())
        self.config = {"format": FORMAT_VERSION, **config}
        try:
            with self._manifest_lock():
                self._check_config()
                # left by a killed writer; never renamed, so never part of the zoo. Root-level temporaries
                # exist only under the manifest lock; shard temporaries of other live workers are theirs.
                stale = list(self.root.glob("*.tmp-*")) + list((self.root / SHARDS).glob(
                    "*.tmp-*" if not sharded else f"*.tmp-{self._tag}"))
                for path in stale:
                    path.unlink()
                self._repair_manifest()
        except BaseException:
            self.close()
            raise

    def owns(self, index: int) -> bool:
        """Whether shard ``index`` is this worker's to make."""
        return index % self.num_shards == self.shard_index

    @contextmanager
    def _manifest_lock(self):
        """An exclusive flock of the manifest for a ``with`` block (blocking: holders keep it for milliseconds)."""
        with open(self.root / MANIFEST_LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _check_config(self) -> None:
        path = self.root / CONFIG
        wanted = json.loads(json.dumps(self.config))  # as it reads back (tuples -> lists)
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != wanted:
                diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
                raise ZooStoreError(f"{self.root} holds a zoo made with other settings (differs in {diff}); "
                                    "use another --out directory or the same settings to resume")
        else:
            _atomic_write(path, lambda p: p.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n"))

    def done_shards(self) -> list[int]:
        return sorted(int(p.name[6:11]) for p in (self.root / SHARDS).glob("shard-*.safetensors"))

    def _repair_manifest(self) -> None:
        expected = _dump_lines(r for i in self.done_shards() for r in read_shard_records(shard_path(self.root, i)))
        path = self.root / MANIFEST
        if not path.exists() or path.read_text() != expected:
            _atomic_write(path, lambda p: p.write_text(expected))

    def write_shard(self, index: int, tensors: Mapping[str, Tensor], records: list[dict]) -> None:
        """Store one finished shard: ``tensors`` stacked per state_dict key
        [n, ...], ``records`` the n manifest records in row order."""
        path = shard_path(self.root, index)
        if path.exists():
            raise ZooStoreError(f"{path} already exists: shards are written once")
        records = [{**r, "shard": index, "row": row} for row, r in enumerate(records)]
        metadata = {"records": json.dumps(records, sort_keys=True)}
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = path.with_name(f"{path.name}.tmp-{self._tag}")
        _write_synced(tmp, lambda p: save_file(contiguous, str(p), metadata=metadata))
        # rename and append together: a manifest repair by another worker sees both or neither
        with self._manifest_lock():
            if path.exists():  # a worker of an overlapping share stored it first (shards are deterministic)
                tmp.unlink()
                return
            os.replace(tmp, path)
            with open(self.root / MANIFEST, "a") as f:
                f.write(_dump_lines(records))
                f.flush()
                os.fsync(f.fileno())

    def close(self) -> None:
        for handle in self._locks:
            handle.close()

    def __enter__(self) -> "ZooWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(root: str | os.PathLike) -> list[dict]:
    """The manifest records of a zoo, sorted by id (complete lines only)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{root}: no {MANIFEST}; not a zoo directory")
    # a line without its newline is an append cut short (a writer killed mid-write): not part of the zoo yet
    complete = path.read_text().split("\n")[:-1]
    records = [json.loads(line) for line in complete if line.strip()]
    return sorted(records, key=lambda r: r["id"])


def read_config(root: str | os.PathLike) -> dict:
    path = Path(root) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{root}: no {CONFIG}; not a zoo directory")
    return json.loads(path.read_text())


def load_shard(root: str | os.PathLike, index: int) -> dict[str, Tensor]:
    """All tensors of one shard (each [n, ...])."""
    with safe_open(str(shard_path(Path(root), index)), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def stack_state_dicts(state_dicts: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """[{key: tensor}] -> {key: [n, ...]} (what a shard holds)."""
    return {k: torch.stack([sd[k] for sd in state_dicts]) for k in state_dicts[0]}
