"""torch.distributed set-up for runs under torchrun (gloo on CPU, NCCL on CUDA)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live (NCCL needs CUDA ones)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_local_rank() -> int:
    """This process's rank on its machine under torchrun (LOCAL_RANK), 0 otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device | str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise single process.
    On CUDA, `device` is this rank's GPU (cuda:LOCAL_RANK, see `hardware.pick_device`): it becomes
    the current device before NCCL starts, so each rank's collectives run on its own GPU."""
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), world, env_local_rank(),
                    int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), device)


def ddp_kwargs(device: torch.device) -> dict:
    """DistributedDataParallel placement: on CUDA the module lives on this rank's GPU only."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"device_ids": [index], "output_device": index}
    return {}


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in a single process)."""
    if info.enabled:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world
    return value


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if `flag` is true on any rank (so every rank takes the same branch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
