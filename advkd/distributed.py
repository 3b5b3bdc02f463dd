"""torchrun detection and the one helper that reduces training statistics across ranks.

Every statistic that steers training (balancer losses and entropies, class-wise counts) goes
through :func:`all_reduce_sum` so all ranks take identical decisions. Without torchrun these
are no-ops, so single-process code pays nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place, also returned); identity when not distributed."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
