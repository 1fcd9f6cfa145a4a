"""The peak memory of one piece of work, measured on its own inside a long-lived process.

CUDA: torch's peak of allocated bytes, reset on entry. CPU on Linux: the peak resident
set (``VmHWM``), which writing ``5`` to ``/proc/self/clear_refs`` restarts from the current
resident set, so a comparison measures each (model, seed) pair apart from the ones before
it. Where neither exists, only the process's lifetime peak (``ru_maxrss``) is known: that
is reported as such (``method == "process"``) and nothing is claimed about the work itself.
"""
from __future__ import annotations

import ctypes
import gc
import resource
import sys
from pathlib import Path

import torch

from .devices import resolve_device

#: how :attr:`PeakMemory.method` was measured, in words (for table footnotes)
METHODS = {
    "cuda": "CUDA peak allocated by this work (torch.cuda.max_memory_allocated after a reset)",
    "rss": "peak resident set while this work ran (VmHWM after a reset through /proc/self/clear_refs)",
    "process": "the process's lifetime peak resident set (no per-work measurement on this system)",
}


#: writing "5" here resets the peak resident set (Linux >= 4.0)
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _release_free_heap() -> None:
    """Hand memory freed by earlier work back to the OS (glibc keeps it otherwise), so that
    work reusing that memory still shows as resident growth of its own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        pass


def process_peak_bytes(device: torch.device) -> int:
    """No reset, nothing measured apart: torch's peak allocated on a CUDA ``device`` (since its
    last reset), else the process's lifetime peak resident set (``ru_maxrss``: KiB on Linux,
    bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class PeakMemory:
    """``with PeakMemory(device) as peak: work()``; then ``peak.peak_bytes`` (the highest the
    measure reached while the work ran), ``peak.bytes`` (that above what was held on entry:
    the work's own; None with method "process") and ``peak.method`` (a key of :data:`METHODS`)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.method = "cuda" if self.device.type == "cuda" else "rss"
        self.peak_bytes, self.bytes = 0, None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._held = torch.cuda.memory_allocated(self.device)
            return self
        _release_free_heap()
        try:
            CLEAR_REFS.write_text("5")  # the peak resident set restarts from the current one
            self._held = _status_kib("VmRSS") * 1024
        except OSError:
            self.method = "process"
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "rss":
            self.peak_bytes = _status_kib("VmHWM") * 1024
        else:
            self.peak_bytes = process_peak_bytes(torch.device("cpu"))
            return
        self.bytes = self.peak_bytes - self._held
