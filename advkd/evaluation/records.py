"""Result records: one JSON line per checkpoint x attack, appended to ``<runs-dir>/results.jsonl``.

Records carry per-example robust flags (bit-packed, base64) so that the worst case over any set
of attacks can be recomputed later without attacking again.
"""
from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkd.core.errors import AdvkdError
from advkd.core.locks import locked
from advkd.core.progress import warn
from advkd.core.version import __version__

RESULTS_FILE = "results.jsonl"


def pack_flags(flags: torch.Tensor) -> str:
    """Bool tensor -> compact base64 string (1 bit per example)."""
    bits = np.packbits(flags.detach().to("cpu", torch.bool).numpy().astype(np.uint8))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_flags(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


def versions() -> dict[str, str]:
    out = {"advkd": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        out["pyautoattack"] = version("pyautoattack")
    except Exception:  # optional at evaluation time; absent means not installed
        pass
    return out


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and git sha, saved beside every run and in every record."""
    env: dict[str, Any] = {
        "versions": versions(),
        "git_sha": git_sha(),
        "device": str(device),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def append_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append JSON lines under an exclusive flock on the file itself, so records of concurrent
    ``attack`` processes never interleave (the lock is held only for the write; a waiter polls for
    up to a minute). The store holds whole records only: a torn tail left by an interrupted append
    is repaired first (:func:`repair_torn_tail`), the new records go in one write followed by an
    fsync, and a write that fails (a full disk) is cut back off before the error is raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    with open(path, "a+b") as f, locked(f, what=str(path)):
        repair_torn_tail(path, f)
        start = f.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(payload):  # one write call, continued only if the kernel took part of it
                written += os.write(f.fileno(), payload[written:])
            os.fsync(f.fileno())
        except BaseException:
            f.truncate(start)  # roll back: no partial record is ever left behind
            raise


TORN_SUFFIX = ".torn"


def repair_torn_tail(path: Path, f) -> int:
    """Make the store end at a line boundary; returns the bytes moved aside (0 when it already did).

    ``f`` is ``path`` open in ``a+b`` mode under its lock. A last line without its newline is either
    a complete record (kept: the newline is added) or the fragment of an interrupted append: it is
    cut off and appended to ``<path>.torn`` (kept, never deleted), and one warning says so."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return 0
    start, pos = 0, size
    while pos > 0:  # find the last newline, reading backwards
        lo = max(0, pos - 65536)
        f.seek(lo)
        i = f.read(pos - lo).rfind(b"\n")
        if i >= 0:
            start = lo + i + 1
            break
        pos = lo
    f.seek(start)
    tail = f.read()
    try:
        whole = isinstance(json.loads(tail.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        whole = False
    if whole:
        os.write(f.fileno(), b"\n")
        os.fsync(f.fileno())
        return 0
    side = path.with_name(path.name + TORN_SUFFIX)
    with open(side, "ab") as out:
        out.write(tail + b"\n")
        out.flush()
        os.fsync(out.fileno())
    f.truncate(start)
    os.fsync(f.fileno())
    warn(f"{path} ended in a torn record ({len(tail)} bytes, an interrupted append); moved it to {side} and appended after the last whole record")
    return len(tail)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records in ``path``. A torn LAST line (a process killed while appending) is skipped;
    any other line that is not a JSON object is an AdvkdError naming the line, since silently
    dropping records from the middle would change a table without a word."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AdvkdError(f"{path} is not a text file; it should hold one JSON record per line (advkd attack writes it)") from None
    numbered = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
    out = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if k == len(numbered) - 1:
                continue  # torn last line
            raise AdvkdError(f"{path} line {number} is not valid JSON; fix or delete that line") from None
        if not isinstance(record, dict):
            raise AdvkdError(f"{path} line {number} is a JSON {type(record).__name__}, not a record object; fix or delete that line")
        out.append(record)
    return out
