"""Progress display: Rich bars on a terminal, plain timestamped lines otherwise.

Everything goes to stderr so that ``--format json`` output on stdout stays machine-readable.
Only rank 0 shows anything under torchrun.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advkd.core.distributed import is_main

HEARTBEAT_S = 30.0  # plain mode: at most one progress line per task per this many seconds


def _fmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def duration_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Task:
    """One running task; ``advance`` moves it and updates the fields shown beside the bar.

    ``unit`` names what ``total`` counts ("batches", "clean-correct points"): every line says it,
    with the rate so far and, while running, the time left at that rate.
    """

    def __init__(self, reporter: Reporter, description: str, total: int, unit: str = "") -> None:
        self.reporter = reporter
        self.description = description
        self.unit = unit
        self.total = total
        self.done = 0
        self.skipped = 0  # done before this process started (a resumed epoch): not in the rate
        self.fields: dict[str, Any] = {}
        self.started = time.monotonic()
        self._last_line = self.started
        self._id = None

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update(fields)
        self.reporter._update(self)

    def skip(self, n: int) -> None:
        """Count ``n`` units done before this process (a resumed epoch's batches) without timing them."""
        self.skipped += n
        self.advance(n)

    def rate(self) -> str:
        """``"83/s"`` or ``"2.2 s each"`` from the work done so far in this process ('' before any)."""
        elapsed = time.monotonic() - self.started
        timed = self.done - self.skipped
        if timed <= 0 or elapsed <= 0:
            return ""
        per_s = timed / elapsed
        return f"{per_s:.3g}/s" if per_s >= 1 else f"{1 / per_s:.3g} s each"

    def line(self, *, final: bool) -> str:
        unit = f" {self.unit}" if self.unit else ""
        elapsed = time.monotonic() - self.started
        parts = [f"{self.description}: {self.done}/{self.total}{unit}"]
        if final:
            parts.append(f"in {elapsed:.1f}s")
        rate = self.rate()
        if rate:
            left = elapsed / (self.done - self.skipped) * (self.total - self.done)
            parts.append(f"({rate})" if final else f"{rate}, ETA {duration_text(left)}")
        return " ".join(parts + [_fmt(self.fields)]).rstrip()


class Reporter:
    """Shows tasks and log lines; ``enabled=False`` (or a non-zero rank) silences it."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None, force_plain: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self._enabled = enabled
        self._force_plain = force_plain
        self._progress: Progress | None = None

    @property
    def enabled(self) -> bool:
        """Checked at use time: torchrun may start after the reporter was made."""
        return self._enabled and is_main()

    @property
    def rich(self) -> bool:
        return self.enabled and self.console.is_terminal and not self._force_plain

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self.rich:
            self.console.print(message, highlight=False)
        else:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {message}", highlight=False, markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int, unit: str = "") -> Iterator[Task]:
        task = Task(self, description, total, unit)
        if self.rich:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=True,
            ) as progress:
                self._progress = progress
                task._id = progress.add_task(f"{description} ({unit})" if unit else description, total=total, info="")
                try:
                    yield task
                finally:
                    self._progress = None
        else:
            yield task
        if self.enabled and not self.rich and total > 0:
            self.log(task.line(final=True))

    def _update(self, task: Task) -> None:
        if not self.enabled:
            return
        if self.rich and self._progress is not None:
            self._progress.update(task._id, completed=task.done, info=_fmt(task.fields))
            return
        now = time.monotonic()
        if now - task._last_line >= HEARTBEAT_S and task.done < task.total:
            task._last_line = now
            self.log(task.line(final=False))


def warn(message: str) -> None:
    """One ``advkd: warning: ...`` line on stderr (rank 0 only): something degraded but the work goes on."""
    if is_main():
        print(f"advkd: warning: {message}", file=sys.stderr)
