"""Resuming :func:`graphnfn.training.fit` mid-run: its whole state in one file, rewritten at every evaluation.

A :class:`Checkpoint` holds the model, optimizer and scheduler states, the step, the best
validation score with its weights and step, the history, the training time and networks
seen so far, every RNG state (Python, NumPy, torch CPU and CUDA) and where the training
batches stand (:class:`Passes`). Batches are never saved: a pass is drawn again from the
RNG and loader states it began with, and the batches already trained on are skipped, so a
resumed fit continues with the very batches (and random draws) an uninterrupted one would.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

_END = object()


def rng_states() -> dict:
    """The global RNG states of Python, NumPy and torch (CPU, and every CUDA device once initialised),
    as plain tensors and numbers (a checkpoint loads with ``weights_only=True``)."""
    numpy = np.random.get_state(legacy=False)
    return {"python": random.getstate(),
            "numpy": {"key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)), "pos": numpy["state"]["pos"],
                      "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():  # a CUDA run resumed on a CPU has no CUDA generators to set
        torch.cuda.set_rng_state_all(states["cuda"])


def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The generators that shuffle a DataLoader's passes (its own and its sampler's, once each)."""
    found = [g for g in (loader.generator, getattr(loader.sampler, "generator", None)) if g is not None]
    return [g for i, g in enumerate(found) if all(g is not h for h in found[:i])]


def loader_state(batches: Iterable):
    """What decides the next pass over ``batches`` besides the global RNGs: ``batches.state_dict()``
    where there is one, a DataLoader's generator states, else None (a list passes in one order)."""
    if hasattr(batches, "state_dict"):
        return batches.state_dict()
    if isinstance(batches, DataLoader):
        return [g.get_state() for g in _generators(batches)]
    return None


def load_loader_state(batches: Iterable, state) -> None:
    """Set what :func:`loader_state` returned."""
    if hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state)
    elif isinstance(batches, DataLoader):
        for g, s in zip(_generators(batches), state):
            g.set_state(s)


class Passes:
    """The training batches again and again (a fresh pass each time, so shuffles and augmentations
    are redrawn), resumable: :meth:`state` says how many passes have begun, how many batches of
    the current one were taken, and the RNG and loader states it began with;
    ``Passes(batches, state)`` continues from there."""

    def __init__(self, batches: Iterable, state: dict | None = None):
        self.batches, self.passes, self.position, self.began, self.iterator = batches, 0, 0, None, None
        if state and state["passes"]:
            # the current pass again, from the states it began with; the batches already trained on are dropped
            set_rng_states(state["began"]["rng"])
            load_loader_state(batches, state["began"]["loader"])
            self.passes, self.began, self.iterator = state["passes"], state["began"], iter(batches)
            for _ in range(state["position"]):
                next(self.iterator)
            self.position = state["position"]

    def __iter__(self):
        return self

    def __next__(self):
        batch = _END if self.iterator is None else next(self.iterator, _END)
        if batch is _END:
            self.began = {"rng": rng_states(), "loader": loader_state(self.batches)}
            self.passes, self.position, self.iterator = self.passes + 1, 0, iter(self.batches)
            batch = next(self.iterator, _END)
            if batch is _END:
                raise ValueError("fit: the training loader yields no batches")
        self.position += 1
        return batch

    def state(self) -> dict:
        return {"passes": self.passes, "position": self.position, "began": self.began}


class Checkpoint:
    """fit's state in the file ``path``: :meth:`save` replaces it atomically (a crash mid-write
    leaves the previous one); :meth:`load` restores it if the file exists. ``settings`` (the
    step budget, learning rate, ...) must match the saved ones, so a checkpoint of another
    configuration is refused rather than continued."""

    def __init__(self, path: str | os.PathLike, settings: dict):
        self.path, self.settings = Path(path), settings

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, sched, passes: Passes, loop: dict) -> None:
        """``loop``: fit's own variables (step, best score, weights and step, history, seconds, seen)."""
        state = {"settings": self.settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "passes": passes.state(), "rng": rng_states(), "loop": loop}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces the previous checkpoint
        os.replace(tmp, self.path)

    def load(self, model: nn.Module, opt: torch.optim.Optimizer, sched, train: Iterable) -> tuple[dict | None, Passes]:
        """(fit's loop variables, the batches positioned after the saved step); (None, the batches
        from the start) without a file. Restores the model, optimizer, scheduler and RNG states."""
        if not self.path.is_file():
            return None, Passes(train)
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        differ = sorted(k for k in self.settings if state["settings"].get(k) != self.settings[k])
        if differ:
            raise ValueError(f"fit: the checkpoint {self.path} is of a run with other {differ} "
                             f"({ {k: state['settings'].get(k) for k in differ} }); delete it to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        passes = Passes(train, state["passes"])  # draws the current pass again: the RNGs are set after
        set_rng_states(state["rng"])
        return state["loop"], passes
