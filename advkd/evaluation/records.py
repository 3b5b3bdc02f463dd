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
    """Append JSON lines, flushed and fsynced, under an exclusive flock on the file itself, so
    records of concurrent ``attack`` processes never interleave (the lock is held only for the
    write; a waiter polls for up to a minute)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f, locked(f, what=str(path)):
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


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
