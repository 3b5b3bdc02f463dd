"""Preemption: a cluster's stop signal costs at most one batch.

Slurm stops a job with SIGTERM (and, asked with ``--signal``, SIGUSR1 some seconds ahead), waits
``KillWait`` (30 s by default) and kills it. While a run trains, :func:`stop_signals` turns
SIGTERM and SIGUSR1 into a request that the training loop reads after every batch (and after
every epoch's commit): it finishes the batch, writes a mid-epoch resume state atomically and
raises :class:`Preempted`, which the CLI turns into one line naming the resume command and exit
status :data:`EXIT_PREEMPTED`. ``--resume`` from that state continues bit-exactly.

:class:`CheckpointClock` does the same write every ``--checkpoint-every`` seconds without
stopping. Under torchrun every rank must stop (or save) at the same batch, so the decision is one
all-reduce of both flags per batch (only when distributed).
"""
from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import torch

from advkd.core.distributed import all_reduce_sum, is_distributed
from advkd.core.errors import AdvkdError

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal with its state saved; run the same command with --resume
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(BaseException):
    """A stop signal arrived and the run's state is on disk. A BaseException, like Ctrl-C's
    :class:`~advkd.core.errors.Interrupted`: cleanup code that catches Exception lets it through."""

    def __init__(self, signal_name: str, where: str) -> None:
        super().__init__(f"{signal_name}: {where}")
        self.signal_name, self.where = signal_name, where


class StopRequest:
    """Set by the signal handlers, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def request(self, name: str = "SIGTERM") -> None:
        """What the handler does; tests and callers (a notebook's own stop button) may call it."""
        self.signal_name = name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


STOP = StopRequest()  # one per process: signals are per process


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """SIGTERM and SIGUSR1 request a stop for the duration (main thread only; elsewhere, and for
    a signal the platform lacks, nothing is installed). The previous handlers come back after."""
    STOP.signal_name = None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, STOP.handler)
    try:
        yield STOP
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_now_signals(where: str) -> Iterator[None]:
    """For work with no batch boundary to wait for (an attack suite, whose finished attacks are
    already on disk): SIGTERM and SIGUSR1 raise :class:`Preempted` at once, so the CLI says what
    is kept and exits 75 instead of dying silently."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Preempted(signal.Signals(signum).name, where)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[list[str]]:
    """Around a short durable write (records appended to the store): SIGTERM and SIGUSR1 are
    remembered in the yielded list instead of acted on, so the write completes whole; the caller
    decides afterwards (a command whose last write completed has nothing left to stop)."""
    got: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append(signal.Signals(signum).name)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, handler)
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float | None, *, key: str = "checkpoint_every") -> float:
    """Seconds of ``10m``, ``90s``, ``1.5h``, ``600`` (seconds); ``""``, ``0`` or ``off``: 0 (off)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "off", "0", "none")):
        return 0.0
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text))
        if match is None:
            raise AdvkdError(f"{key} must be a duration such as 10m, 90s, 1h or off, got {text!r}")
        seconds = float(match.group(1)) * _UNIT[match.group(2).lower()]
    if not seconds >= 0 or seconds == float("inf"):
        raise AdvkdError(f"{key} must be a duration >= 0 such as 10m, got {text!r}")
    return seconds


class CheckpointClock:
    """Due every ``every`` seconds of training (0: never)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = time.monotonic()

    @property
    def due(self) -> bool:
        return self.every > 0 and time.monotonic() - self.last >= self.every

    def reset(self) -> None:
        self.last = time.monotonic()


def decide(stop: StopRequest, clock: CheckpointClock) -> tuple[bool, bool]:
    """(stop, save) after a batch, the same on every rank: a stop requested on any rank stops all,
    and rank 0's clock decides the periodic save (one all-reduce of two numbers when distributed)."""
    if not is_distributed():
        return stop.requested, clock.due
    from advkd.core.distributed import rank

    flags = torch.tensor([1.0 if stop.requested else 0.0, 1.0 if clock.due and rank() == 0 else 0.0])
    total = all_reduce_sum(flags)
    if total[0] > 0 and stop.signal_name is None:
        stop.request("SIGTERM (another rank)")
    return bool(total[0] > 0), bool(total[1] > 0)
