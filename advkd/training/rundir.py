"""The run directory of a training run: create, clear or resume it under its lock, and what is
written there besides checkpoints (``config.yaml``, ``env.json``, ``metrics.jsonl``, checkpoint
metadata).

Its own module so that :mod:`advkd.training.loop` holds only the training itself. A first epoch
interrupted before its commit point leaves files but no ``resume`` state: such a dir is cleared
and started again; a committed run is resumed only with ``--resume`` and the same settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from advkd.core.distributed import is_main, on_main, world_size
from advkd.core.errors import AdvkdError, spell
from advkd.core.files import atomic_write_text, remove
from advkd.core.locks import LOCK_FILE, RunLock
from advkd.core.progress import Reporter
from advkd.core.runs import BEST, CONFIG, ENV, LAST, METRICS, RESUME
from advkd.core.safe_yaml import load_yaml
from advkd.core.version import __version__
from advkd.data.batches import epoch_batches
from advkd.evaluation.records import environment, now_iso
from advkd.models import MODELS
from advkd.models.checkpoint import read_metadata
from advkd.training.config import TrainConfig, check_saved_config, config_to_dict
from advkd.training.resume import IDENTITY_IGNORES, ResumeState, load_resume, resumable_state
from advkd.training.setup import Setup


def checkpoint_meta(setup: Setup, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    cfg = setup.cfg
    return {
        "arch": cfg.arch,
        "paper_arch": cfg.paper_arch,
        "num_classes": str(setup.num_classes),
        "dataset": cfg.dataset,
        "normalize": cfg.normalize,
        "method": cfg.method,
        "teachers": {r: t.record() for r, t in setup.teachers.items()},
        "preset": cfg.preset,
        "scale": cfg.scale,
        "epoch": str(epoch),
        "metrics": metrics,
        "config": config_to_dict(cfg),
        "eps": str(getattr(setup.method.p, "eps", "")),
        "seed": str(cfg.seed),
        "created": now_iso(),
        "advkd_version": __version__,
        "kind": cfg.kind,
        "name": cfg.name,
        "fast_paths": setup.fast.as_record(),
        **({"method_origin": cfg.method_origin} if cfg.method_origin else {}),
        **({"arch_origin": origin.record()} if (origin := MODELS.origin(cfg.arch)) is not None else {}),
    }


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def open_run_dir(setup: Setup, *, resume: bool, reporter: Reporter | None = None) -> tuple[ResumeState | None, bool, RunLock | None]:
    """Lock the run dir and create, clear or resume it (rank 0); every rank gets the state.

    Returns (state, created_now, lock); rank 0 holds the lock (None elsewhere) and must release
    it when training ends. Under torchrun a refusal on rank 0 is raised on every rank.
    """
    reporter = reporter or Reporter(enabled=False)
    held: dict[str, Any] = {}

    def on_rank0() -> tuple[bool, bool]:
        created = not setup.path.exists()
        lock = RunLock.acquire(setup.path)  # before looking at any file: nobody else is writing them now
        try:
            state = _open_run_dir(setup, resume=resume, reporter=reporter)
        except BaseException:
            lock.release()
            raise
        held.update(lock=lock, state=state)
        return state is not None, created

    resuming, created = on_main(on_rank0)
    if is_main():
        return held["state"], created, held["lock"]
    return (load_resume(setup.path / RESUME) if resuming else None), created, None


def _run_files(path: Path) -> list[Path]:
    """What an interrupted first epoch can leave: the run's own files and atomic-write temps."""
    names = {CONFIG, ENV, METRICS, BEST, LAST, RESUME}
    return sorted(p for p in path.iterdir() if p.is_file() and p.name != LOCK_FILE and (
        p.name in names or (p.name.startswith("epoch-") and p.suffix == ".safetensors") or (p.name.startswith(".") and p.suffix == ".tmp")
    ))


def _open_run_dir(setup: Setup, *, resume: bool, reporter: Reporter) -> ResumeState | None:
    """Under the run-dir lock: the resume state of a resumable run (``resumable_state`` decides),
    else a fresh run dir. A dir with files but no commit point is a first epoch interrupted
    before its commit: it is cleared (its run files and stray temps) and restarted, with or
    without ``--resume``, and one log line says so. Stray temps of a resumable run are removed."""
    path = setup.path
    # read config.yaml (safe loader, schema) before the resume state compares itself with it
    saved = _saved_config(path) if (path / RESUME).exists() else {}
    state = resumable_state(path)  # AdvkdError for committed work that cannot be resumed
    if state is not None:
        if not resume:
            raise AdvkdError(f"run {path} already exists; pass {spell('--resume', 'resume=True')} to continue it, or {spell('--name', 'name=...')} to start another")
        world = world_size()
        state.check_position(path / RESUME, steps_per_epoch=epoch_batches(len(setup.train_data), setup.cfg.batch_size // world, world_size=world),
                             world=world, rank_batch=setup.cfg.batch_size // world)  # before anything of it is used or said
        ours = config_to_dict(setup.cfg)
        # a setting an older release did not save cannot have changed; the name tags derived from how a setting was
        # given (--set or the preset) are not settings: a preset that now says what --set said resumes the same run
        diff = [k for k in ours if k not in RESUME_IGNORES and k in saved and saved[k] != ours[k]]
        if diff:
            k = diff[0]
            raise AdvkdError(f"cannot resume {path}: it was started with {k}={saved.get(k)!r}, now {k}={ours[k]!r}; use {spell('--name', 'name=...')} for a new run")
        for tmp in path.glob(".*.tmp"):  # an interrupted atomic write; nobody else writes here (we hold the lock)
            remove(tmp)
        for changed in (_changed_speed_paths(path, setup.fast), _changed_environment(path, setup.device),
                        plugin_change(saved.get("method_origin") or {}, setup.cfg.method_origin, path)):
            if changed:
                reporter.log(f"warning: {changed}")
        return state
    leftovers = _run_files(path)
    if leftovers:
        reporter.log(f"{path}: its first epoch never completed (no {RESUME}); removing {len(leftovers)} leftover file(s) and starting again")
    for p in leftovers:
        remove(p)
    atomic_write_text(path / CONFIG, config_yaml(setup.cfg))
    atomic_write_text(path / ENV, json.dumps(environment(setup.device), indent=2, sort_keys=True))
    return None


RESUME_IGNORES = IDENTITY_IGNORES  # --epochs extends a run; the other two only name it (one list, resume.py's)


def plugin_change(before: dict[str, str], now: dict[str, str], path: Path) -> str:
    """A plugin method resumed under another version of its package: one warning line (as for
    another torch); another class altogether is refused ('' when nothing changed)."""
    if before == now or not (before or now):
        return ""
    if before.get("spec") != now.get("spec") or before.get("distribution") != now.get("distribution"):
        was = f"{before.get('distribution') or 'no package'} ({before.get('spec') or 'built in'})"
        raise AdvkdError(f"cannot resume {path}: its method came from {was}, now from "
                         f"{now.get('distribution') or 'no package'} ({now.get('spec') or 'built in'}); use {spell('--name', 'name=...')} for a new run")
    return (f"{path.name} started with {before.get('distribution')} {before.get('version')} and resumes with "
            f"{now.get('distribution')} {now.get('version')} (the plugin that holds method {now.get('spec')}), "
            f"so its epochs may not all compute the same method")


def _changed_speed_paths(path: Path, fast: Any) -> str:
    """A one-line warning when a resumed run computes in another precision or memory format than
    its committed epochs did (bf16 vs fp32 moves the numbers; '' when the same or unknown)."""
    try:
        before = read_metadata(path / LAST).get("fast_paths") or {}
    except Exception:  # noqa: BLE001 - an older or foreign checkpoint: nothing to compare
        return ""
    now = fast.as_record()
    diff = [k for k in ("amp", "channels_last", "compile") if k in before and bool(before[k]) != now[k]]
    if not diff:
        return ""
    flags = " ".join(f"--{'' if before[k] else 'no-'}{k.replace('_', '-')}" for k in diff)
    return (f"{path.name} ran its committed epochs with {', '.join(f'{k}={before[k]}' for k in diff)} and resumes with "
            f"{', '.join(f'{k}={now[k]}' for k in diff)}, so it will not equal an uninterrupted run bit for bit; "
            f"pass {flags} to continue as it started")


def _changed_environment(path: Path, device: Any) -> str:
    """A one-line warning when a run resumes on another thread count, device type or torch version
    than it started with (its env.json): each changes the floating-point order of reductions, so
    the resumed run is not bit-exact ('' when the same or unknown)."""
    try:
        before = json.loads((path / ENV).read_text(encoding="utf-8"))
        now = environment(device)
        pairs = {
            "CPU threads": (before.get("cpu_threads"), now.get("cpu_threads")),
            "device type": (str(before.get("device", "")).split(":")[0], str(now.get("device", "")).split(":")[0]),
            "torch": ((before.get("versions") or {}).get("torch"), (now.get("versions") or {}).get("torch")),
        }
    except (OSError, ValueError, AttributeError):
        return ""
    diff = {k: (a, b) for k, (a, b) in pairs.items() if a not in (None, "") and a != b}
    if not diff:
        return ""
    fix = ""
    if set(diff) == {"CPU threads"}:
        n = diff["CPU threads"][0]
        fix = f"; {spell(f'run advkd --threads {n} ... --resume', f'set ADVKD_THREADS={n} and resume=True')} to continue as it started"
    return (f"{path.name} started with {', '.join(f'{k} {a}' for k, (a, _) in diff.items())} and resumes with "
            f"{', '.join(f'{k} {b}' for k, (_, b) in diff.items())}, so it will not equal an uninterrupted run bit for bit{fix}")


def _saved_config(path: Path) -> dict[str, Any]:
    """The config a run dir was started with ({} when it has none), or an AdvkdError when it is unreadable."""
    if not (path / CONFIG).exists():
        return {}
    fix = "restore it, or use --name for a new run"
    try:
        saved = load_yaml(path / CONFIG, source=f"cannot resume {path}: its {CONFIG}")
        if not isinstance(saved, dict):
            raise AdvkdError(f"cannot resume {path}: its {CONFIG} is not a mapping of settings")
        check_saved_config(saved, f"cannot resume {path}: its {CONFIG}")
    except AdvkdError as e:
        raise AdvkdError(f"{e}; {fix}") from None
    return saved


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
