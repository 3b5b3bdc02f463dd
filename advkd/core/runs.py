"""Run directories: ``<runs-dir>/<kind>/<dataset>/<name>/`` and how to find them again.

A run dir holds ``config.yaml`` (resolved), ``env.json``, ``metrics.jsonl``, ``best.safetensors``,
``last.safetensors``, optional ``epoch-NNN.safetensors`` and ``resume.safetensors`` (the state
that makes ``--resume`` exact). It is complete when ``metrics.jsonl`` has the last epoch.

Every component of a run path comes from :func:`check_name` (or ``KINDS``), so a run name, kind
or dataset given by the user can never point outside the runs dir.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.files import register_root
from advkd.core.safe_yaml import load_yaml

KINDS = ("pretrain-teacher", "distill")
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LAST = "last.safetensors"
RESUME = "resume.safetensors"
ENV = "env.json"
#: Longest run name in UTF-8 bytes (file systems allow 255 per path component; leave room).
MAX_NAME_BYTES = 200
_SEPARATORS = {"/", "\\"} | {os.sep} | ({os.altsep} if os.altsep else set())


@dataclass
class RunInfo:
    path: Path
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.config.get("kind", "")

    @property
    def created(self) -> float:
        """Time of the last checkpoint write (newest runs first in lookups)."""
        for name in (LAST, CONFIG):
            p = self.path / name
            if p.exists():
                return p.stat().st_mtime
        return 0.0

    @property
    def best(self) -> Path:
        return self.path / BEST

    def epochs_done(self) -> int:
        return len(read_metrics(self.path / METRICS))

    @property
    def complete(self) -> bool:
        return self.best.exists() and self.epochs_done() >= int(self.config.get("epochs", 0))


def check_name(name: str, *, what: str = "run name") -> str:
    """Return ``name`` if it is one safe path component, else raise an AdvkdError saying why.

    Refused, never silently renamed (a user who typed ``../x`` is told): empty, ``.``/``..``, a
    path separator (``/`` or ``\\``), NUL or another control character, more than
    :data:`MAX_NAME_BYTES` bytes in UTF-8. Anything else (letters, digits, ``-_.+=,@``, spaces,
    non-ASCII letters) is kept as given.
    """
    fix = "use letters, digits, '-', '_' and '.' only, e.g. my-run"
    if not isinstance(name, str):
        raise AdvkdError(f"{what} must be a string, got {name!r}; {fix}")
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    if not name.strip():
        raise AdvkdError(f"{what} {shown} is empty; {fix}")
    if name in (".", ".."):
        raise AdvkdError(f"{what} {shown} names a directory, not a run; {fix}")
    sep = next((c for c in name if c in _SEPARATORS), None)
    if sep is not None:
        raise AdvkdError(f"{what} {shown} contains the path separator {sep!r} (a run is one folder inside the runs dir); {fix}")
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise AdvkdError(f"{what} {shown} contains the control character {bad!r}; {fix}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise AdvkdError(f"{what} {shown} is {size} bytes long, more than {MAX_NAME_BYTES}; pick a shorter name")
    return name


def run_dir(runs_dir: str | Path, kind: str, dataset: str, name: str) -> Path:
    """``<runs_dir>/<kind>/<dataset>/<name>``; AdvkdError when any part is not one safe component.

    The result is always inside ``runs_dir``: checked again on the normalised absolute path (so it
    holds even if :func:`check_name` had a hole) and on the resolved one (:func:`check_inside`: a
    symlink inside the runs dir that leads elsewhere is refused, not written through).
    """
    if kind not in KINDS:
        raise AdvkdError(f"unknown run kind {kind!r}; valid: {', '.join(KINDS)}")
    check_name(dataset, what="dataset name")
    check_name(name)
    root = Path(runs_dir)
    path = root / kind / dataset / name
    top = os.path.abspath(root)
    full = os.path.abspath(path)
    if full == top or os.path.commonpath([top, full]) != top:
        raise AdvkdError(f"run name {name!r} would leave the runs dir {root}; use a plain name such as my-run")
    return check_inside(path, root, what="run dir")


def check_inside(path: str | Path, runs_dir: str | Path, *, what: str) -> Path:
    """``path`` if no component of it below ``runs_dir`` is a symlink and it resolves inside the
    resolved ``runs_dir``; else an AdvkdError, before any work: advkd writes only inside the runs
    dir, through no link (advkd.core.files enforces the same at every open; this says it early).
    The runs dir itself may be a link (a runs dir on another disk), and becomes a root of the one
    write path here; an explicit ``--out`` is not checked."""
    register_root(runs_dir)
    top, full = os.path.abspath(runs_dir), os.path.abspath(path)
    if full != top and os.path.commonpath([top, full]) == top:
        at = top
        for part in os.path.relpath(full, top).split(os.sep):
            at = os.path.join(at, part)
            if os.path.islink(at):
                raise AdvkdError(f"{what} {path}: {at} is a symlink; advkd writes nothing through a link below the runs dir "
                                 f"{runs_dir} (remove the link, or pass the folder it points to as --runs-dir)")
    root = os.path.realpath(runs_dir)
    real = os.path.realpath(path)
    if real != root and os.path.commonpath([root, real]) != root:
        raise AdvkdError(f"{what} {path} resolves to {real}, outside the runs dir {runs_dir} (through a symlink); "
                         "advkd writes only inside the runs dir: remove the link, or pass the other folder as --runs-dir")
    return Path(path)


def safe_name(text: str) -> str:
    """File-system friendly: keep letters, digits, '-', '.', '_'; at most MAX_NAME_BYTES bytes.

    A longer result is cut and ends in a hash of the whole text, so it stays unique and stable.
    """
    out = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    out = out.strip("-.") or "run"
    raw = out.encode()
    if len(raw) > MAX_NAME_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:12]
        out = raw[: MAX_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore").rstrip("-.") + "-" + digest
    return out


def default_name(cfg: Any, teacher_archs: dict[str, str]) -> str:
    """Deterministic, so re-running a command with --resume finds its own run.

    ``<arch>-<method>[-<teacher archs>][-<preset>][-<--set method.* overrides>][-<training settings
    changed from the preset>]-s<seed>``, with
    the paper arch names (teacher archs in role order: clean, robust, single).
    """
    parts = [cfg.paper_arch or cfg.arch, cfg.method]
    parts += [teacher_archs[r] for r in sorted(teacher_archs)]
    if cfg.preset:
        parts.append(cfg.preset)
    if getattr(cfg, "variant", ""):
        parts.append(cfg.variant)
    if getattr(cfg, "overrides", ""):
        parts.append(cfg.overrides)
    parts.append(f"s{cfg.seed}")
    return safe_name("-".join(parts))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def load_run(path: Path) -> RunInfo | None:
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        return None
    try:
        config = load_yaml(cfg_path, source=str(cfg_path)) or {}
    except AdvkdError:
        return None
    return RunInfo(path=path, config=config) if isinstance(config, dict) else None


def find_runs(runs_dir: str | Path, *, kind: str | None = None, dataset: str | None = None) -> list[RunInfo]:
    """All runs under ``runs_dir``, newest first."""
    root = Path(runs_dir)
    runs = []
    for kind_name in [kind] if kind else KINDS:
        for cfg_path in sorted(root.glob(f"{kind_name}/{dataset or '*'}/*/{CONFIG}")):
            info = load_run(cfg_path.parent)
            if info is not None:
                runs.append(info)
    return sorted(runs, key=lambda r: r.created, reverse=True)


def latest_checkpoint(runs_dir: str | Path) -> Path:
    """The best checkpoint of the newest run that has one."""
    for run in find_runs(runs_dir):
        if run.best.exists():
            return run.best
    raise AdvkdError(f"no checkpoint found under {runs_dir}; pass a CHECKPOINT path or train one with advkd distill / pretrain-teacher")
