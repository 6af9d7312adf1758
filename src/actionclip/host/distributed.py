"""torch.distributed with one code path: a single process is world size 1 and needs no process group.

Launch many processes with ``torchrun``; it sets RANK/WORLD_SIZE/LOCAL_RANK, and ``init`` joins the group
(nccl on GPU, gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str | None = None) -> DistInfo:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = parse_device(device, "train.device")
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, torch_device)


def parse_device(name: str | None, option: str) -> torch.device:
    """The device ``name`` names (None: CUDA when available), or a ValueError naming ``option`` when it is not a device
    or not on this machine."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{option} {name}: not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: CUDA is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if device.type != "cpu" and not (hasattr(backend, "is_available") and backend.is_available()):
        raise ValueError(f"{option} {name}: not available here")
    return device


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def all_gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0, keeping the gradient of every rank's part."""
    if not info.enabled:
        return tensor
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.all_gather(tensor), dim=0)


def all_gather(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (no gradient)."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def made_on_main(make, info: DistInfo, timeout: timedelta = timedelta(hours=2)):
    """``make()`` run by rank 0 alone, its result pickled and sent to every rank: for work that may outlast the
    default group's timeout (10 minutes for NCCL), such as checking 260k videos' files, the others wait on a gloo group
    of their own with ``timeout``. An exception rank 0 meets is raised on every rank, so that none waits for nothing."""
    if not info.enabled:
        return make()
    group = dist.new_group(backend="gloo", timeout=timeout)
    holder = [None]
    try:
        if info.is_main:
            try:
                holder[0] = (make(), None)
            except Exception as error:
                holder[0] = (None, error)
                dist.broadcast_object_list(holder, src=0, group=group)
                raise
        dist.broadcast_object_list(holder, src=0, group=group)
    finally:
        dist.destroy_process_group(group)
    made, problem = holder[0]
    if problem is not None:
        raise problem
    return made
