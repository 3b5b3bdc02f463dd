"""Follow the idle cores: fewer torch threads while other processes hold some of the cores.

torch's OpenMP threads wait for each other at the end of every parallel region. When another
process holds one of the cores, the thread that shares it is descheduled for whole time slices
and every region waits for it: on a 2-core Xeon a mini PGD-AT step took 3.3x as long beside a
busy loop and 5.5x beside a second advkd run, against 1.7x and 2.4x with one thread
(benchmarks/busy_core.py, docs/speed.md). So during training advkd samples how much CPU the rest
of the machine uses (``/proc/stat`` minus this process's own time, over the cores this process may
run on) every :data:`INTERVAL_S` seconds and runs ``round(cores - foreign)`` threads (at least 1,
at most the count it started with). Fewer threads follow the first sample that shows the foreign
work (a wrong guess costs one interval); more threads wait for two samples that agree. ``--threads N`` (or ``ADVKD_THREADS``) fixes the count and turns this off, as does
``ADVKD_FOLLOW_CORES=0``; a run is bit-exact only under one thread count (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

INTERVAL_S = 2.0
START_WINDOW_S = 0.25  # the sample before the first batch (the cost of following, once per run)

_FIXED = False  # --threads / ADVKD_THREADS gave a count: never change it


def fix_threads() -> None:
    """The user chose the thread count: following the idle cores is off for this process."""
    global _FIXED
    _FIXED = True


def enabled() -> bool:
    return not _FIXED and os.environ.get("ADVKD_FOLLOW_CORES", "1") != "0" and os.path.exists("/proc/stat")


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    busy: int  # clock ticks the allowed cores spent busy (every process)
    own: int  # clock ticks this process spent (all its threads)


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def read_busy(cpus: set[int], text: str | None = None) -> int:
    """Busy ticks (all but idle and iowait) of ``cpus`` from ``/proc/stat``."""
    text = open("/proc/stat", encoding="ascii").read() if text is None else text
    busy = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy


def read_own(text: str | None = None) -> int:
    """This process's user + system ticks (``/proc/self/stat`` fields 14 and 15)."""
    text = open("/proc/self/stat", encoding="ascii").read() if text is None else text
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def foreign_cores(before: Sample, after: Sample, hz: float) -> float:
    """Cores' worth of CPU that other processes used between two samples."""
    seconds = after.at - before.at
    if seconds <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / hz / seconds)


class IdleCores:
    """Sets torch's thread count to the cores other processes leave idle (see the module doc).
    ``follow()`` is called between batches and costs two small file reads every INTERVAL_S."""

    def __init__(self, *, ceiling: int | None = None, cpus: set[int] | None = None, interval_s: float = INTERVAL_S,
                 sample: Callable[[], Sample] | None = None, set_threads: Callable[[int], None] = torch.set_num_threads,
                 get_threads: Callable[[], int] = torch.get_num_threads, hz: float | None = None) -> None:
        self.cpus = cpus if cpus is not None else allowed_cpus()
        self.ceiling = max(1, min(ceiling or get_threads(), len(self.cpus)))
        self.interval_s = interval_s
        self.hz = hz or float(os.sysconf("SC_CLK_TCK"))
        self._sample = sample or (lambda: Sample(time.monotonic(), read_busy(self.cpus), read_own()))
        self._set, self._get = set_threads, get_threads
        self._last = self._sample()
        self._pending: int | None = None
        self.foreign = 0.0
        self.changes = 0

    def target(self, foreign: float) -> int:
        return max(1, min(self.ceiling, round(len(self.cpus) - foreign)))

    def follow(self) -> str:
        """'' or one line when the thread count changed."""
        now = self._sample()
        if now.at - self._last.at < self.interval_s:
            return ""
        self.foreign = foreign_cores(self._last, now, self.hz)
        self._last = now
        want, have = self.target(self.foreign), self._get()
        if want == have:
            self._pending = None
            return ""
        if want > have and self._pending != want:  # more threads only after two samples agree: a pause is not an exit
            self._pending = want
            return ""
        self._pending = None
        self._set(want)
        self.changes += 1
        return (f"other processes use {self.foreign:.1f} of the {len(self.cpus)} cores: advkd now runs {want} thread{'s' if want > 1 else ''} "
                f"(was {have}; --threads N fixes the count)")

    def start(self, window_s: float = START_WINDOW_S) -> str:
        """One short sample before the first batch, so a run that starts beside foreign work
        starts with the right count ('' or the line that says the count changed)."""
        before = self._sample()
        time.sleep(window_s)
        self._last = self._sample()
        self.foreign = foreign_cores(before, self._last, self.hz)
        want, have = self.target(self.foreign), self._get()
        if want >= have:
            return ""
        self._set(want)
        self.changes += 1
        return (f"other processes use {self.foreign:.1f} of the {len(self.cpus)} cores: advkd runs {want} thread{'s' if want > 1 else ''} "
                f"(not {have}; re-checked every {self.interval_s:g} s; --threads N fixes the count)")

    def restore(self) -> None:
        if self._get() != self.ceiling:
            self._set(self.ceiling)


@contextlib.contextmanager
def following(log: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """A ``follow()`` to call between batches (a no-op when the count is fixed or off); the
    thread count the run started with is restored at the end."""
    if not enabled():
        yield lambda: None
        return
    try:
        gov = IdleCores()
    except (OSError, ValueError):  # an unreadable /proc: nothing to follow
        yield lambda: None
        return

    first = gov.start()
    if first:
        log(first)

    def follow() -> None:
        line = gov.follow()
        if line:
            log(line)

    try:
        yield follow
    finally:
        gov.restore()
