"""Devices and scale-out on PyTorch's own engine.

`torchrun --nproc_per_node=N -m dlforge train PRESET` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()` then starts the
process group (nccl on GPUs, gloo on CPUs) and the Trainer wraps the model in DistributedDataParallel. Nothing here
is home-made: sharding is done by the sampler, gradient averaging by DDP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dlforge.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks cuda, then mps, then cpu. Under torchrun each process takes the GPU of its local rank."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(pref)


def check_available(device: torch.device, pref: str) -> None:
    """Refuse, naming train.device, a device this machine does not have (before anything is written)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {pref!r}, but this torch sees no CUDA GPU (torch {torch.__version__}, "
                          "cuda available: no); use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {pref!r}, but there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: {pref!r}, but MPS is not available here; use auto or cpu")


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; otherwise a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    check_available(device, device_pref)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's decision (stop, for example) for every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=info.device if info.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_across(info: DistInfo, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (NaN on any rank gives NaN on every rank)."""
    t = value.detach().clone()
    dist.all_reduce(t)
    return t / info.world_size


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()  # tear down together: a rank leaving while its peer still works can abort in gloo
        dist.destroy_process_group()
