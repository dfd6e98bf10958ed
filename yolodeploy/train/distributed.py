"""torchrun integration: read the launcher's environment, start the process group, shard the data."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "shard_indices"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str) -> DistributedContext:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1): gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank, local_rank, world_size)


def shard_indices(order: list[int], context: DistributedContext) -> list[int]:
    """This rank's part of a global order; padded by wrapping so every rank runs the same number of steps."""
    if not context.enabled:
        return order
    per_rank = -(-len(order) // context.world_size)
    padded = (order * (per_rank * context.world_size // max(len(order), 1) + 1))[: per_rank * context.world_size]
    return padded[context.rank :: context.world_size]
