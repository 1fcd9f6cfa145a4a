"""The experiments under ``torchrun``: one process per device, DistributedDataParallel.

    torchrun --standalone --nproc_per_node 2 -m experiments.cnn_generalization with batch_size=64

``batch_size`` is the effective batch, summed over the processes: each of the
``world_size`` processes trains on ``batch_size / world_size`` networks per step (its part
of the train split, drawn by a :class:`~torch.utils.data.DistributedSampler`), and DDP
averages their gradients, so a step is the step of one process with the whole batch and
``lr`` needs no scaling. Validation and test run on the whole splits in every process
(the same numbers everywhere, so every process keeps the same best weights). Only rank 0
reports to Sacred's observers (the run directory). Without torchrun nothing here acts.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from graphnfn.devices import resolve_device


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def check(cfg: dict) -> None:
    """ValueError for a world_size set by hand or a batch the processes cannot share evenly."""
    if cfg["world_size"] != world_size():
        raise ValueError(f"world_size={cfg['world_size']}: it is set by torchrun ({world_size()} processes here), "
                         "not by hand")
    if cfg["batch_size"] % world_size():
        raise ValueError(f"batch_size={cfg['batch_size']} is the effective batch of all {world_size()} processes: "
                         "make it a multiple of the world size")


def setup(device: str) -> None:
    """Join the process group of a multi-process torchrun: nccl with this rank's GPU
    (``LOCAL_RANK``) when ``device`` resolves to CUDA, gloo on the CPU."""
    if world_size() < 2 or dist.is_initialized():
        return
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
