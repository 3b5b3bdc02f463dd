"""Timing helpers every benchmark script shares: synchronised wall time of one call, alternated
series of several calls, load average.

Its own module because ``bench.py`` imports ``autoattack_pair.py`` and ``cpu_paths.py``, and all
of them time the same way.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call (CUDA: synchronised on both ends, so queued kernels are counted)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def load_avg() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine makes a single ratio unreliable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def spread(times: list[float]) -> float:
    return max(times) / min(times)


def alternate(
    fns: list[Callable[[], Any]], *, warmup: int, repeats: int, device: torch.device, max_repeats: int | None = None,
    noisy: float = 1.3,
) -> list[list[float]]:
    """Warm each fn up, then time them in turn: a, b, a, b, ... Seconds per call.

    After ``repeats`` rounds, while any series spreads by more than ``noisy`` (max / min) -- a
    sign that another process took the CPU -- more rounds run, up to ``max_repeats`` in all.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    limit = max(repeats, max_repeats or repeats)
    for r in range(limit):
        if r >= repeats and all(spread(t) <= noisy for t in times):
            break
        for i, fn in enumerate(fns):
            times[i].append(timed(fn, device))
    return times
