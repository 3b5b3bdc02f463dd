"""Run directories: ``<runs-dir>/<kind>/<dataset>/<name>/`` and how to find them again.

A run dir holds ``config.yaml`` (resolved), ``env.json``, ``metrics.jsonl``, ``best.safetensors``,
``last.safetensors``, optional ``epoch-NNN.safetensors`` and ``resume.safetensors`` (the state
that makes ``--resume`` exact). It is complete when ``metrics.jsonl`` has the last epoch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from advkd.errors import AdvkdError

KINDS = ("pretrain-teacher", "distill")
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LAST = "last.safetensors"
RESUME = "resume.safetensors"
ENV = "env.json"


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


def run_dir(runs_dir: str | Path, kind: str, dataset: str, name: str) -> Path:
    return Path(runs_dir) / kind / dataset / name


def safe_name(text: str) -> str:
    """File-system friendly: keep letters, digits, '-', '.', '_'."""
    out = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    return out.strip("-.") or "run"


def default_name(cfg: Any, teacher_archs: dict[str, str]) -> str:
    """Deterministic, so re-running a command with --resume finds its own run.

    ``<arch>-<method>[-<teacher archs>][-<preset>][-<--set method.* overrides>]-s<seed>``, with
    the paper arch names (teacher archs in role order: clean, robust, single).
    """
    parts = [cfg.paper_arch or cfg.arch, cfg.method]
    parts += [teacher_archs[r] for r in sorted(teacher_archs)]
    if cfg.preset:
        parts.append(cfg.preset)
    if getattr(cfg, "variant", ""):
        parts.append(cfg.variant)
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
        config = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError:
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
