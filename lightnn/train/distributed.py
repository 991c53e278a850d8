"""torch.distributed helpers for ``torchrun --nproc_per_node=K -m lightnn train ...``: gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "all_reduce_sum", "barrier", "cleanup"]


def init_from_env(device: str | None = None) -> torch.device:
    """Join the process group torchrun describes (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) and pick this process's
    device: ``cuda:LOCAL_RANK`` with nccl when CUDA is there (and not refused by ``device='cpu'``), else CPU with gloo.
    Without torchrun, returns the plain device and initializes nothing."""
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
            return torch.device("cuda", local)
        dist.init_process_group("gloo")
        return torch.device("cpu")
    if is_distributed() and use_cuda:
        return torch.device("cuda", torch.cuda.current_device())
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place; returns it). A no-op in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
