"""Conversion runs its tensor work on one torch thread.

Converting is memory-bound copying through many medium-sized tensor ops (a
few hundred per network). Extra OpenMP threads save little on such copies,
and when another process holds a core every op waits at the thread barrier
(measured: docs/converters.md, Performance). The thread count is restored
afterwards; it is process-wide, so other threads of the caller run on one
thread meanwhile.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def single_threaded(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run
