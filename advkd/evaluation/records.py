"""Result records: one JSON line per checkpoint x attack, appended to ``<runs-dir>/results.jsonl``.

Records carry per-example robust flags (bit-packed, base64) so that the worst case over any set
of attacks can be recomputed later without attacking again.
"""
from __future__ import annotations

import base64
import json
import math
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
from advkd.core.files import open_file
from advkd.core.locks import locked
from advkd.core.progress import warn
from advkd.core.version import __version__

RESULTS_FILE = "results.jsonl"
TORN_SUFFIX = ".torn"  # fragments of interrupted appends, moved aside by an append
BAD_SUFFIX = ".bad"  # lines ``advkd results --repair`` moved aside
REPAIR_HINT = "run `advkd results --repair` to move bad lines aside"


def results_path(runs_dir: str | Path) -> Path:
    """The runs dir's record store, refused when it is a link leading out of the runs dir."""
    from advkd.core.runs import check_inside

    return check_inside(Path(runs_dir) / RESULTS_FILE, runs_dir, what="record store")


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
    records = list(records)
    for r in records:
        problem = record_problem(r)
        if problem is not None:  # advkd never writes a record it would refuse to read
            raise AdvkdError(f"refusing to append a malformed record to {path}: {problem}")
    payload = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode("utf-8")
    with open_file(path, "a+b") as f, locked(f, what=str(path)):
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
    with open_file(side, "ab") as out:
        out.write(tail + b"\n")
        out.flush()
        os.fsync(out.fileno())
    f.truncate(start)
    os.fsync(f.fileno())
    warn(f"{path} ended in a torn record ({len(tail)} bytes, an interrupted append); moved it to {side} and appended after the last whole record")
    return len(tail)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class NotJson(ValueError):
    """A line that does not parse at all: the torn fragment of an interrupted append when it is last."""


def parse_record(line: str) -> dict[str, Any]:
    """One line of the store as a valid record, or ValueError saying what is wrong with it."""
    try:
        record = json.loads(line, parse_constant=_no_constants)
    except json.JSONDecodeError:
        raise NotJson("is not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError(f"is a JSON {type(record).__name__}, not a record object")
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(problem)
    return record


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_problem(record: dict[str, Any]) -> str | None:
    """What makes ``record`` unusable by the tables, or None: the schema every record meets when
    written and when read (the keys the tables, plans and figures rely on, with their types)."""
    if not isinstance(record.get("checkpoint"), str) or not record["checkpoint"]:
        return "has no checkpoint path"
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}, not a finite number"
    if record.get("kind") == "knowledge_scale":
        return None if _finite(record.get("value")) else f"value is {record.get('value')!r}, not a finite number"
    if not isinstance(record.get("attack"), str) or not record["attack"]:
        return "has no attack id"
    for key in ("accuracy", "clean_accuracy"):
        if key == "accuracy" or record.get(key) is not None:
            value = record.get(key)
            if not _finite(value) or not 0 <= value <= 100:
                return f"{key} is {value!r}, not a number in 0-100"
    n = record.get("n_examples")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
        return f"n_examples is {n!r}, not a positive whole number"
    return None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records in ``path``, each checked against :func:`record_problem`. A torn LAST line (a
    process killed while appending) is skipped; any other bad line is an AdvkdError naming its
    number, since silently dropping records from the middle would change a table without a word."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    numbered = _numbered_lines(path)
    for k, (number, line) in enumerate(numbered):
        try:
            out.append(parse_record(line))
        except ValueError as e:
            if k == len(numbered) - 1 and isinstance(e, NotJson):
                continue  # torn last line: the next append moves it aside
            raise AdvkdError(f"{path} line {number} {e}; {REPAIR_HINT}") from None
    return out


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AdvkdError(f"cannot read {path}: {e.strerror or e}") from None
    out = []
    for i, (line, ok) in enumerate(_decoded(raw), 1):
        if not ok:  # one damaged byte names its line; the rest of the store is still whole records
            raise AdvkdError(f"{path} line {i} is not UTF-8 text; {REPAIR_HINT}")
        if line.strip():
            out.append((i, line.strip()))
    return out


def _decoded(raw: bytes) -> list[tuple[str, bool]]:
    """The store's lines (split at b"\\n" only, as advkd writes them), each decoded strictly, with
    whether it was valid UTF-8 (an invalid one is decoded with replacement characters)."""
    out = []
    for chunk in raw.split(b"\n")[: -1 if raw.endswith(b"\n") else None]:
        try:
            out.append((chunk.decode("utf-8"), True))
        except UnicodeDecodeError:
            out.append((chunk.decode("utf-8", errors="replace"), False))
    return out


def check_store(path: str | Path) -> None:
    """Refuse to work toward an append that cannot succeed, before the attacks run: a store that is
    not a regular file (a folder, a device, a fifo), one this process cannot read and write, or
    one with a bad line."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # created by the first append (the runs dir's own writability is checked by the caller)
    except NotADirectoryError:
        raise AdvkdError(f"record store {path}: a file stands where one of its folders should be; move it away") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise AdvkdError(f"record store {path} is {kind}, so no result could be recorded; move it away (the store is a JSON-lines file)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise AdvkdError(f"record store {path} is not readable and writable by this user; fix its permissions or use another --runs-dir")
    read_records(path)


def repair_store(path: str | Path) -> tuple[int, list[int]]:
    """Move every line that is not a valid record to ``<path>.bad`` (appended, with its line
    number); returns (records kept, numbers of the lines moved). Under the store's lock: the
    original is first copied to ``<path>.before-repair``, the bad lines are appended to the side
    file, then the store is rewritten in place with the good lines, each step fsynced."""
    path = Path(path)
    if not path.is_file():
        return 0, []
    with open_file(path, "a+b") as f, locked(f, what=str(path)):
        f.seek(0)
        raw = f.read()
        good, bad = [], []
        for number, (line, utf8) in enumerate(_decoded(raw), 1):
            if not line.strip():
                continue
            if not utf8:
                bad.append((number, line, "is not UTF-8 text"))
                continue
            try:
                parse_record(line)
                good.append(line.strip())
            except ValueError as e:
                bad.append((number, line, str(e)))
        if not bad:
            return len(good), []
        backup = path.with_name(path.name + ".before-repair")
        _write_synced(backup, raw, mode="wb")
        side = path.with_name(path.name + BAD_SUFFIX)
        _write_synced(side, "".join(json.dumps({"line": n, "problem": why, "text": text}) + "\n" for n, text, why in bad).encode("utf-8"), mode="ab")
        f.truncate(0)
        os.write(f.fileno(), "".join(line + "\n" for line in good).encode("utf-8"))
        os.fsync(f.fileno())
    return len(good), [n for n, _, _ in bad]


def _write_synced(path: Path, data: bytes, *, mode: str) -> None:
    with open_file(path, mode) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
