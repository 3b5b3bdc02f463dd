"""torchrun support: process-group setup, rank helpers, and the reductions training relies on.

Every statistic that steers training (balancer losses and entropies, class-wise counts) goes
through :func:`all_reduce_sum` so all ranks take identical decisions. Without torchrun these
are no-ops, so single-process code pays nothing. Only rank 0 writes files and logs.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from advkd.core.errors import AdvkdError, spell


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise AdvkdError(f"{spell(f'--device {spec!r}', f'device={spec!r}')} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        cpu = spell("--device cpu", "device='cpu'")
        raise AdvkdError(f"{spell(f'--device {spec}', f'device={spec!r}')} requested but CUDA is not available here; use {cpu}")
    return device


def setup(device: torch.device) -> torch.device:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU); return this rank's device.

    A no-op outside torchrun. On CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun() or is_distributed():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def teardown() -> None:
    """Leave the process group together (a rank leaving early can abort the others' shutdown)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place, also returned); identity when not distributed.

    NCCL reduces CUDA tensors only: a CPU tensor (loss totals, class statistics) travels through
    the current CUDA device and is copied back, so callers need not know the backend.
    """
    if is_distributed():
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            buf = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (errors and decisions taken on rank 0)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and hand its result to every rank.

    A user error raised there is raised on every rank, so no rank waits forever for the others.
    """
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except AdvkdError as e:
            error = str(e)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise AdvkdError(error)
    return result


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) before evaluating or saving."""
    if is_distributed():
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous [start, stop) share of n items among ``world`` (the first
    n % world get one more): together the shares cover every item once, in rank order."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(n: int) -> tuple[int, int]:
    """This process's share of n items (:func:`shard_bounds` at the current rank)."""
    return shard_bounds(n, rank(), world_size())
