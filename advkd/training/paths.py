"""The training run's speed paths: the switches left open are settled before the first step.

A resumed run keeps the paths its committed epochs ran (read from ``last.safetensors``), so a
resume never changes precision or layout because the machine measured differently; a new run takes
the cached or measured choice (:mod:`advkd.core.speed_choice`) for its own networks and batch.
Under torchrun rank 0 decides and every rank runs its choice.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advkd.core.accel import FastPaths, apply_to_model, autocast, to_memory_format
from advkd.core.distributed import broadcast_object, is_main
from advkd.core.runs import LAST
from advkd.core.speed_choice import Candidate, candidates, decide, key_for, label


def family(roles: list[str]) -> str:
    """The method family a measurement stands for: which teachers a step runs."""
    return "teachers " + "+".join(sorted(roles)) if roles else "no teacher"


def committed_paths(run_path: Path) -> dict[str, bool] | None:
    """The (amp, channels_last) a run's committed epochs ran with, or None (a new run, an older
    checkpoint without the record)."""
    from advkd.models.checkpoint import read_metadata

    if not (run_path / LAST).is_file():
        return None
    try:
        ran = read_metadata(run_path / LAST).get("fast_paths") or {}
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported by the resume that reads it
        return None
    return {k: bool(ran[k]) for k in ("amp", "channels_last") if k in ran} or None


def proxy_steps(student: nn.Module, teachers: list[nn.Module], x: torch.Tensor, options: list[Candidate], device: torch.device,
                warn: Callable[[str], None]) -> dict[Candidate, Callable[[], None]]:
    """One timed unit per candidate on copies of the networks: the student's train-mode forward
    and backward (to its weights and the input, as every method's attack and update need) and a
    no-grad forward of each teacher. A candidate whose first step raises is left out with one line."""
    copies: dict[bool, tuple[nn.Module, list[nn.Module]]] = {}
    steps: dict[Candidate, Callable[[], None]] = {}
    for amp, channels_last in options:
        paths = FastPaths(amp=amp, channels_last=channels_last)
        if channels_last not in copies:
            copies[channels_last] = (copy.deepcopy(student).train(), [copy.deepcopy(t) for t in teachers])
        s, ts = copies[channels_last]
        for m in (s, *ts):
            apply_to_model(m, paths)

        def step(s: nn.Module = s, ts: list[nn.Module] = ts, paths: FastPaths = paths) -> None:
            with autocast(device, paths.amp):
                xi = to_memory_format(x, paths).requires_grad_(True)
                out = s(xi)
                with torch.no_grad():
                    for t in ts:
                        t(to_memory_format(x, paths))
            out.float().sum().backward()
            s.zero_grad(set_to_none=True)

        try:
            step()
        except Exception as e:  # noqa: BLE001 - an optional path that fails here is not a candidate
            warn(f"{label((amp, channels_last))} failed on this machine ({type(e).__name__}: {str(e)[:120]}); not a candidate")
            continue
        steps[(amp, channels_last)] = step
    return steps


def settle(fast: FastPaths, *, device: torch.device, student_arch: str, student: nn.Module, teachers: dict[str, tuple[str, nn.Module]],
           x: torch.Tensor, run_path: Path, warn: Callable[[str], None]) -> FastPaths:
    """``fast`` with its open switches decided: as the run's committed epochs ran, else by the
    cache or a measurement (rank 0's, under torchrun). ``teachers``: role -> (arch, module)."""
    if not fast.open:
        return fast
    ran = committed_paths(run_path)
    if ran is not None and all(k in ran for k in fast.open):
        return dataclasses.replace(fast, **{k: ran[k] for k in fast.open}, open=(), why="as the run's committed epochs ran")

    def decided() -> tuple[Candidate, str]:
        options = candidates(None if "amp" in fast.open else fast.amp, None if "channels_last" in fast.open else fast.channels_last)
        key = key_for(device, student=student_arch, teachers={r: a for r, (a, _) in teachers.items()}, batch=len(x),
                      family=family(list(teachers)), options=options)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        d = decide(key, lambda: proxy_steps(student, [m for _, m in teachers.values()], x, options, device, warn),
                   remeasure=fast.remeasure, sync=sync, warn=warn)
        return d.choice, d.why

    (amp, channels_last), why = broadcast_object(decided() if is_main() else None)
    return dataclasses.replace(fast, amp=amp, channels_last=channels_last, open=(), why=why)
