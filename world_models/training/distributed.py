"""Several processes through ``torchrun`` (DDP); one process needs none of this.

``torchrun --nproc_per_node N -m world_models.cli train-vae ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` reads them, joins the process group (NCCL
on GPUs, gloo on CPUs) and picks this rank's device. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from world_models.core.device import pick_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any_true(self, flag: torch.Tensor) -> bool:
        """True when ``flag`` (a bool scalar tensor) is true on any rank; syncs the device."""
        if self.enabled:
            flag = flag.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def from_main(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``values`` on every rank, in place. Decisions that lead into collectives
        (stop now, checkpoint now, resume) must be one rank's, or ranks diverge and hang.
        ``values`` lives on this rank's device (NCCL takes no CPU tensors)."""
        if self.enabled:
            dist.broadcast(values, src=0)
        return values

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value


def setup(requested_device: str | None) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if there is one; return it and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), pick_device(requested_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank), device


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
