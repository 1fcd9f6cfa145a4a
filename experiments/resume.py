"""Where an experiment keeps its training checkpoint, and picking it up with ``resume=RUN_DIR``.

Each training (a single-task run; each (model, seed, configuration) pair of a comparison)
keeps :func:`graphnfn.training.fit`'s checkpoint in its run directory as ``ckpt-<...>.pt``,
rewritten at every evaluation and deleted once the training's result is saved. A run
started with ``resume=RUN_DIR`` copies RUN_DIR's checkpoint of the same training into its
own directory and continues from it (so a resumed run that is cut off again resumes too).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from sacred.config.config_scope import ConfigScope

from . import distributed
from .config import run_directory, shared_config


def checkpoint_file(cfg: dict, _run, name: str) -> Path | None:
    """``name`` in the run directory of ``_run``, holding ``cfg['resume']``'s checkpoint of that
    name if it has one; None without a run directory (no FileStorageObserver) or under torchrun
    (a distributed fit does not checkpoint)."""
    folder = run_directory(_run)
    if folder is None or distributed.world_size() > 1:
        return None
    path = Path(folder) / name
    cut_off = Path(cfg["resume"]) / name if cfg.get("resume") else None
    if cut_off is not None and cut_off.is_file() and not path.exists():
        shutil.copyfile(cut_off, path)
        print(f"--- continuing from {cut_off}")
    return path


def check_same_config(cfg: dict, may_differ: tuple[str, ...] = ("resume",)) -> None:
    """ValueError unless ``cfg['resume']`` is a run directory whose config equals ``cfg`` (but ``may_differ``).
    A shared key the old run does not record (it predates the key) ran at the key's default."""
    folder = Path(cfg["resume"])
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"resume={cfg['resume']!r}: no run directory there (no config.json)")
    old = {**ConfigScope(shared_config)(), **json.loads((folder / "config.json").read_text())}
    differ = sorted(k for k in cfg if k not in may_differ and k in old and old[k] != cfg[k])
    if differ:
        may = ", ".join(k for k in may_differ if k != "resume")
        raise ValueError(f"resume={cfg['resume']!r}: that run had other values of {differ}; resume only with the "
                         "same config" + (f" ({may} may change)" if may else ""))
