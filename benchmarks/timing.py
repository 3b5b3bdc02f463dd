"""Timing helpers every benchmark script shares: synchronised wall time of one call, load average.

Its own module because ``bench.py`` imports ``autoattack_pair.py`` and both time the same way.
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
