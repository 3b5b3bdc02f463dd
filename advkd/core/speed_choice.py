"""Speed paths chosen by measurement on the machine that runs, cached per machine and network.

CPU flags say what a CPU can decode, not what torch's kernels make of it on that machine,
hypervisor and build: on a Xeon (model 207) whose flags list ``avx512_bf16`` bf16 matmuls ran at
half the fp32 rate and the flag-chosen bf16 default was 1.13x slower than fp32 + channels-last
(docs/speed.md). So the switches a command leaves unset (``--amp``, ``--channels-last``) are decided
by timing a few training steps of the run's own networks under each candidate path, alternated
(a, b, c, d, a, b, ...), once per machine, torch, networks, batch size and method family; the
choice and its timings are cached in the user's cache directory, so later runs start without the
measurement and a noisy re-measurement cannot make runs flap between paths.

The rule (:func:`choose`): candidates are ranked by exactness (fp32 NCHW, fp32 channels-last, bf16
NCHW, bf16 channels-last); a less exact candidate replaces the current choice only when it is
faster by more than :data:`MARGIN` (5 %). So ties go to the exact path, and the choice is always
within 5 % of the fastest measured candidate.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MARGIN = 0.05  # a less exact path must be this much faster (time ratio) to be chosen
BUDGET_S = 3.0  # timed rounds stop after this many seconds (at least MIN_ROUNDS run)
MIN_ROUNDS, MAX_ROUNDS = 3, 7
CACHE_FORMAT = "advkd-speed-paths/1"
CACHE_FILE = "speed-paths.json"

Candidate = tuple[bool, bool]  # (amp, channels_last)
EXACTNESS: tuple[Candidate, ...] = ((False, False), (False, True), (True, False), (True, True))


def label(c: Candidate) -> str:
    """``fp32 NCHW``, ``bf16 channels-last``, ...: the words of the run's first line and the cache."""
    return f"{'bf16' if c[0] else 'fp32'} {'channels-last' if c[1] else 'NCHW'}"


def from_label(text: str) -> Candidate:
    precision, _, layout = text.partition(" ")
    if precision not in ("fp32", "bf16") or layout not in ("NCHW", "channels-last"):
        raise ValueError(f"not a speed path: {text!r}")
    return precision == "bf16", layout == "channels-last"


def candidates(amp: bool | None, channels_last: bool | None) -> list[Candidate]:
    """The paths to time: every value of each switch left unset, the given value of the others."""
    return [c for c in EXACTNESS if (amp is None or c[0] == amp) and (channels_last is None or c[1] == channels_last)]


def choose(seconds: dict[Candidate, float], margin: float = MARGIN) -> Candidate:
    """The most exact candidate unless a less exact one is faster by more than ``margin``
    (applied in exactness order, so the result is within ``1 + margin`` of the fastest)."""
    ranked = [c for c in EXACTNESS if c in seconds]
    if not ranked:
        raise ValueError("no candidate was measured")
    best = ranked[0]
    for c in ranked[1:]:
        if seconds[c] * (1 + margin) < seconds[best]:
            best = c
    return best


# ----------------------------------------------------------------------------- measurement


def measure(steps: dict[Candidate, Callable[[], None]], *, sync: Callable[[], None] = lambda: None,
            budget_s: float = BUDGET_S, clock: Callable[[], float] = time.perf_counter) -> dict[Candidate, float]:
    """Median seconds of each candidate's step, timed in turn (a, b, ..., a, b, ...) after one
    warm-up round: between MIN_ROUNDS and MAX_ROUNDS rounds, more only while within ``budget_s``."""
    for step in steps.values():
        step()
    sync()
    times: dict[Candidate, list[float]] = {c: [] for c in steps}
    start = clock()
    for r in range(MAX_ROUNDS):
        if r >= MIN_ROUNDS and clock() - start > budget_s:
            break
        for c, step in steps.items():
            sync()
            t0 = clock()
            step()
            sync()
            times[c].append(clock() - t0)
    return {c: statistics.median(ts) for c, ts in times.items()}


# ----------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """``$ADVKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/advkd``, else ``~/.cache/advkd``."""
    if os.environ.get("ADVKD_CACHE_DIR"):
        return Path(os.environ["ADVKD_CACHE_DIR"])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "advkd"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def machine_name(device: torch.device) -> str:
    """The device a choice holds for: the GPU's name, or the CPU's model with torch's vector level."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from advkd.core.accel import cpu_model
    from advkd.core.cpu import probe

    return f"{cpu_model()} ({probe().capability}, {platform.machine()})"


@dataclass(frozen=True)
class ChoiceKey:
    """What a measured choice depends on: the machine, torch, the threads, the networks, the batch,
    the method family (the teachers a step runs: none, one robust, clean + robust) and the
    candidates (a forced switch leaves fewer)."""

    machine: str
    torch: str
    threads: int
    student: str
    teachers: tuple[str, ...]
    batch: int
    family: str
    candidates: tuple[str, ...]

    def text(self) -> str:
        teachers = "+".join(self.teachers) or "no teacher"
        return (f"{self.machine} | torch {self.torch} | {self.threads} threads | {self.student} <- {teachers} | "
                f"batch {self.batch} | {self.family} | {', '.join(self.candidates)}")


def key_for(device: torch.device, *, student: str, teachers: dict[str, str], batch: int, family: str,
            options: Iterable[Candidate]) -> ChoiceKey:
    return ChoiceKey(
        machine=machine_name(device), torch=torch.__version__.split("+")[0], threads=torch.get_num_threads() if device.type == "cpu" else 0,
        student=student, teachers=tuple(f"{r}:{a}" for r, a in sorted(teachers.items())), batch=batch, family=family,
        candidates=tuple(label(c) for c in options),
    )


def read_cache(path: Path | None = None) -> tuple[dict[str, dict[str, Any]], str]:
    """The cached entries by key text, and a one-line note when the file was unreadable, corrupt
    or foreign (then it counts as empty and is replaced at the next save; never an error)."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # none yet (a folder in the way is said when writing)
        return {}, ""
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return {}, f"ignoring the speed-path cache {path} ({type(e).__name__}); measuring again"
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        return {}, f"ignoring the speed-path cache {path} (not an advkd {CACHE_FORMAT} file); measuring again"
    entries = {k: v for k, v in data["entries"].items() if _valid_entry(v)}
    dropped = len(data["entries"]) - len(entries)
    return entries, (f"ignoring {dropped} malformed entr{'y' if dropped == 1 else 'ies'} of the speed-path cache {path}" if dropped else "")


def _valid_entry(entry: Any) -> bool:
    """A choice among its own finite, positive timings (anything else is a foreign or damaged entry)."""
    try:
        seconds = {from_label(k): float(v) for k, v in entry["seconds"].items()}
        return from_label(entry["choice"]) in seconds and all(math.isfinite(v) and v > 0 for v in seconds.values())
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def write_entry(key: ChoiceKey, entry: dict[str, Any], path: Path | None = None) -> str:
    """Add one entry to the cache (atomically); '' on success, else why it was not kept."""
    from advkd.core.files import atomic_write_text

    path = path or cache_path()
    entries, _ = read_cache(path)
    entries[key.text()] = entry
    try:
        atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1, sort_keys=True) + "\n")
    except OSError as e:
        return f"the speed-path choice was not cached ({path}: {e.strerror or e}); the next run measures again"
    return ""


# ----------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Decision:
    """The chosen (amp, channels_last), and the words that say why for the run's first line."""

    choice: Candidate
    why: str
    seconds: dict[Candidate, float] = dataclasses.field(default_factory=dict)
    measured_s: float = 0.0  # what the measurement cost here (0 when the cache answered)


def speedups(choice: Candidate, seconds: dict[Candidate, float]) -> str:
    """``1.31x over fp32 NCHW, 1.13x over bf16 channels-last``: the choice against every other candidate."""
    return ", ".join(f"{seconds[c] / seconds[choice]:.2f}x over {label(c)}" for c in EXACTNESS if c in seconds and c != choice)


def decide(key: ChoiceKey, steps: Callable[[], dict[Candidate, Callable[[], None]]], *, remeasure: bool = False,
           sync: Callable[[], None] = lambda: None, warn: Callable[[str], None] = lambda _: None) -> Decision:
    """The cached choice for ``key``, else (or with ``remeasure``) a new measurement of ``steps()``
    (built only when needed), chosen by :func:`choose` and cached."""
    entries, note = read_cache()
    if note:
        warn(note)
    entry = entries.get(key.text())
    if entry is not None and not remeasure:
        choice = from_label(entry["choice"])
        seconds = {from_label(k): float(v) for k, v in entry["seconds"].items()}
        return Decision(choice, f"cached choice for this machine, measured {entry.get('measured', '?')}: {speedups(choice, seconds) or 'one candidate'}; "
                                f"--paths measure to measure again", seconds)
    t0 = time.perf_counter()
    runnable = steps()
    seconds = measure(runnable, sync=sync) if len(runnable) > 1 else {c: 1.0 for c in runnable}
    cost = time.perf_counter() - t0
    choice = choose(seconds)
    kept = write_entry(key, {
        "key": dataclasses.asdict(key), "choice": label(choice), "seconds": {label(c): round(s, 6) for c, s in seconds.items()}, "margin": MARGIN,
        "measured": time.strftime("%Y-%m-%d %H:%M"), "load": _load(), "cost_s": round(cost, 2),
    })
    if kept:
        warn(kept)
    where = "not cached" if kept else f"cached in {cache_path()}"
    return Decision(choice, f"measured on this machine in {cost:.1f} s: {speedups(choice, seconds) or 'one candidate'}; {where}", seconds, cost)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def this_machine(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries measured on this machine's CPU or one of its GPUs (keys start with its name)."""
    names = [machine_name(torch.device("cpu"))]
    if torch.cuda.is_available():
        names += [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {k: v for k, v in entries.items() if k.split(" | ", 1)[0] in names}


def rows(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per cached choice, for ``advkd speed``."""
    out = []
    for _, e in sorted(entries.items()):
        key = e.get("key") if isinstance(e.get("key"), dict) else {}
        choice = from_label(e["choice"])
        seconds = {from_label(k): float(v) for k, v in e["seconds"].items()}
        out.append({"machine": key.get("machine"), "torch": key.get("torch"), "threads": key.get("threads"),
                    "networks": f"{key.get('student')} <- {'+'.join(key.get('teachers') or []) or 'no teacher'}",
                    "batch": key.get("batch"), "family": key.get("family"), "choice": e["choice"], "measured": e.get("measured"),
                    "load": e.get("load"), "cost_s": e.get("cost_s"), "seconds": e["seconds"], "speedups": speedups(choice, seconds)})
    return out
