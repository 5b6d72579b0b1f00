"""Multi-process training under ``torchrun``: process group, device per process, reductions.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address (also across nodes);
without them the run is a single process and every function here is a cheap no-op. CPU runs use the gloo
backend, CUDA runs NCCL with one GPU per local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` picks this process's GPU."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device: cuda was asked for but torch sees no CUDA device (use device: auto or cpu)"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_kind: str) -> tuple[DistInfo, torch.device, bool]:
    """Join the process group when launched by torchrun.

    Returns this process's rank info, its device, and whether this call created the process group (its
    creator destroys it; a group made by the caller, e.g. for several trainings, is left alone).
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo(), resolve_device(device_kind), False
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    )
    device = resolve_device(device_kind, info.local_rank)
    if dist.is_initialized():
        return info, device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return info, device, True


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place and returned); unchanged in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) over processes.

    DDP copies rank 0's buffers at every forward, so after the last step of an epoch each rank holds
    slightly different statistics; averaging makes every rank evaluate (and save) the same network.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)


def broadcast_object(obj: object, src: int = 0) -> object:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "average_buffers",
    "barrier",
    "broadcast_object",
    "cleanup",
    "launched_by_torchrun",
    "resolve_device",
    "setup",
    "wrap_ddp",
]
