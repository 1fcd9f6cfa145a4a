"""What the benchmarks share: timing, one measurement per fresh process, and the
results file with the machine it came from. Peak memory: :class:`graphnfn.memory.PeakMemory`."""
from __future__ import annotations

import json
import multiprocessing as mp
import platform
import time
from pathlib import Path
from queue import Empty
from typing import Callable

import torch

from graphnfn.memory import PeakMemory


def timed(step: Callable[[], object], repeat: int, device: str | torch.device) -> tuple[float, int]:
    """A warm-up call of ``step``, then the best of ``repeat`` timed calls, in
    seconds; and the peak memory of all of them, in bytes (:class:`PeakMemory`)."""
    with PeakMemory(device) as peak:
        seconds = timed_in_turn({"step": step}, repeat, device)["step"]
    return seconds, peak.bytes


def timed_in_turn(steps: dict[str, Callable[[], object]], repeat: int,
                  device: str | torch.device) -> dict[str, float]:
    """Seconds per call of each step, best of ``repeat``: one warm-up call each, then
    ``repeat`` rounds in which every step runs once in turn, so that load from other
    processes (a shared CPU) falls on all of them alike and their ratios hold."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for step in steps.values():
        step()
    best = {name: float("inf") for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _child(queue, fn: Callable[..., dict], args: tuple) -> None:
    try:
        queue.put(fn(*args))
    except Exception as e:  # reported as the row, e.g. out of memory on a big case
        queue.put({"error": f"{type(e).__name__}: {e}"})


def in_fresh_process(fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` (a module-level function returning a dict) in a new process;
    a failure, a crash included, comes back as ``{"error": ...}``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    row = None
    while row is None:
        try:
            row = queue.get(timeout=1.0)
        except Empty:
            if not proc.is_alive():  # killed (e.g. out of memory) or finished: one last look
                try:
                    row = queue.get(timeout=1.0)
                except Empty:
                    row = {"error": f"the process died (exit code {proc.exitcode})"}
    proc.join()
    return row


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_results(path: str | Path, device: str | torch.device, config: dict, **sections) -> None:
    """``{"meta": {device, torch, threads, **config}, **sections}`` as JSON at ``path``."""
    meta = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(), **config}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, **sections}, indent=2))
    print(f"wrote {path}")
