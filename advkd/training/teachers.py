"""Teacher resolution: a checkpoint path, an architecture name in the teacher store, or RobustBench.

Forms of a teacher spec:

- ``path/to/best.safetensors`` — an advkd checkpoint;
- ``ARCH:path/to/weights.pt`` — foreign weights for a registry architecture
  (:mod:`advkd.evaluation.sources`, as for every command that reads a model);
- ``ARCH`` (``wrn34-10``, ``rn56`` ...) — the newest ``pretrain-teacher`` run of that arch and
  dataset under the runs dir: a natural run for the clean-teacher role, a robust one otherwise;
- ``robustbench:<model id>`` — the RobustBench zoo (optional ``robustbench`` package; the model
  dir is ``$ADVKD_MODEL_DIR`` or ``<data dir>/robustbench-models``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.core.runs import BEST, find_runs
from advkd.evaluation.sources import ROBUSTBENCH, is_foreign, load_checkpoint_for, load_source
from advkd.methods import ROLE_FLAGS
from advkd.models import MODELS, canonical_arch

CLEAN_ROLES = ("clean_teacher",)


@dataclass
class Teacher:
    role: str
    spec: str
    model: nn.Module
    arch: str
    paper_arch: str
    source: str  # path or robustbench id
    sha256: str
    method: str = ""

    def record(self) -> dict[str, Any]:
        """What checkpoints and results store about this teacher."""
        return {"spec": self.spec, "arch": self.arch, "paper_arch": self.paper_arch, "source": self.source, "sha256": self.sha256, "method": self.method}


def teacher_records(teachers: dict[str, Teacher]) -> dict[str, dict[str, str]]:
    """What a run's config saves as ``resolved_teachers``: per role, the checkpoint it resolved to."""
    return {r: {k: v for k, v in t.record().items() if k != "spec"} for r, t in teachers.items()}


def wants_robust(role: str) -> bool:
    return role not in CLEAN_ROLES


class MissingTeacher(AdvkdError):
    """No teacher of this architecture in the teacher store; ``hint`` is the command that makes one."""

    def __init__(self, message: str, hint: str, what: str = "", found: str = "") -> None:
        super().__init__(message)
        self.hint, self.what, self.found = hint, what, found


def pretrain_hint(arch: str, role: str, dataset: str, preset: str) -> str:
    """The command that makes the missing teacher at the run's scale; a paper preset's teachers
    come from its paper's teacher recipe (``adaad-paper`` -> the AdaAD repo's PGD-AT teacher,
    ``bmtard-paper`` -> B-MTARD's TRADES / natural teachers)."""
    method = "trades" if wants_robust(role) else "natural"
    if preset.endswith("-paper"):
        preset = preset.replace("-paper", "-teacher")
        if preset == "adaad-teacher" and wants_robust(role):
            method = "pgd-at"
    hint = f"advkd pretrain-teacher --arch {arch} --method {method} --dataset {dataset}"
    return hint + (f" --preset {preset}" if preset else "")


def _scale_warning(preset: str) -> str:
    """Said beside a hint that would start a paper-scale run: hours to days without a GPU."""
    if preset and not preset.endswith(("-paper", "-teacher")) and preset != "official":
        return ""
    return " (paper scale: hundreds of epochs, days on a CPU; add --preset mini for minutes or --preset small for hours)"


def _elsewhere(runs_dir: str | Path, paper_arch: str, robust: bool, dataset: str) -> list[str]:
    """Teacher-store runs of ``paper_arch`` made at other scales (another stand-in or preset)."""
    out = []
    for run in find_runs(runs_dir, kind="pretrain-teacher", dataset=dataset):
        cfg = run.config
        if (cfg.get("paper_arch") or cfg.get("arch")) == paper_arch and (cfg.get("method") != "natural") == robust and (run.path / BEST).exists():
            given = cfg.get("preset_file") or cfg.get("preset")
            out.append(f"{run.path / BEST} (preset {cfg['preset']}: add --preset {given})" if cfg.get("preset") else str(run.path / BEST))
    return out


def resolve_teachers(specs: dict[str, str], **kwargs: Any) -> dict[str, Teacher]:
    """:func:`resolve_teacher` for every role; all missing store teachers are named in one error."""
    out: dict[str, Teacher] = {}
    missing: list[MissingTeacher] = []
    for role, spec in sorted(specs.items()):
        try:
            out[role] = resolve_teacher(spec, role=role, **kwargs)
        except MissingTeacher as e:
            missing.append(e)
    if len(missing) == 1:
        raise missing[0]
    if missing:
        what = "; ".join(e.what for e in missing)
        hints = " && ".join(e.hint for e in missing)
        found = "".join(e.found for e in missing)
        raise AdvkdError(f"{what}; create them with: {hints}{_scale_warning(kwargs.get('preset', ''))}{found}")
    return out


def resolve_teacher(
    spec: str,
    *,
    role: str,
    dataset: str,
    num_classes: int,
    runs_dir: str | Path,
    device: torch.device | str = "cpu",
    preset: str = "",
    arch_map: dict[str, str] | None = None,
    data_dir: str | Path | None = None,
) -> Teacher:
    """Load the teacher ``spec`` names for ``role``; AdvkdError with the fix when impossible."""
    spec = spec.strip()
    if spec.startswith(ROBUSTBENCH) or is_foreign(spec):
        src = load_source(spec, device=device, dataset=dataset, data_dir=data_dir, expect={"num_classes": str(num_classes)})
        return Teacher(role, spec, src.model, src.meta["arch"], src.meta["paper_arch"], str(src.weights or spec), src.sha256, src.meta["method"])
    path = Path(spec)
    if path.suffix in (".safetensors", ".pt", ".pth") or path.exists():
        if path.suffix in (".pt", ".pth"):
            raise AdvkdError(f"{spec} is a foreign .pt file; name its architecture: ARCH:{spec} (e.g. wrn34-10:{spec})")
        return _from_checkpoint(spec, path, role=role, dataset=dataset, num_classes=num_classes, device=device)
    if spec in MODELS:
        return _from_store(spec, role=role, dataset=dataset, num_classes=num_classes, runs_dir=runs_dir, device=device, preset=preset, arch_map=arch_map or {})
    raise AdvkdError(f"teacher {spec!r} is neither a checkpoint path, an architecture name, nor robustbench:<id>")


def _from_checkpoint(spec: str, path: Path, *, role: str, dataset: str, num_classes: int, device) -> Teacher:
    model, meta = load_checkpoint_for(path, device=device, expect={"dataset": dataset, "num_classes": num_classes})
    return Teacher(role, spec, model, meta["arch"], meta.get("paper_arch") or meta["arch"], str(path), sha256_file(path), meta.get("method", ""))


REDUCED = ("mini", "small")  # scales whose teachers share stand-in architectures: a teacher must come from the same one


def _scale_of(preset: str) -> str:
    """The scale of the student's preset ('' without one, or when it cannot be read here)."""
    if not preset:
        return ""
    from advkd.training.config import cached_preset

    try:
        return cached_preset(preset).scale
    except AdvkdError:
        return ""


def _from_store(spec, *, role, dataset, num_classes, runs_dir, device, preset, arch_map) -> Teacher:
    paper_arch = canonical_arch(spec)
    arch = canonical_arch(arch_map.get(paper_arch, paper_arch))
    robust = wants_robust(role)
    label = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    scale = _scale_of(preset)
    unfinished = []
    for run in find_runs(runs_dir, kind="pretrain-teacher", dataset=dataset):
        cfg = run.config
        if cfg.get("arch") != arch or (cfg.get("paper_arch") or cfg.get("arch")) != paper_arch:
            continue
        if (cfg.get("method") != "natural") != robust or not (run.path / BEST).exists():
            continue
        if scale in REDUCED and cfg.get("scale") != scale:
            continue  # another reduced scale's teacher with the same stand-in (mini and small both train ResNet-14s)
        if not run.complete:
            unfinished.append(str(run.path))  # still training, or stopped: its best.safetensors is not the teacher yet
            continue
        return _from_checkpoint(spec, run.path / BEST, role=role, dataset=dataset, num_classes=num_classes, device=device)
    kind = "robust" if robust else "clean (natural)"
    if unfinished:
        raise AdvkdError(f"the {kind} {paper_arch} teacher for {dataset}{f' at preset {label}' if label else ''} has not finished training "
                         f"({unfinished[0]}); let it finish (advkd pretrain-teacher ... --resume), or name a checkpoint with "
                         f"{ROLE_FLAGS.get(role, '--teacher')}")
    scale = f" at preset {label} ({arch} standing in)" if preset and arch != paper_arch else f" at preset {label}" if preset else ""
    hint = pretrain_hint(paper_arch, role, dataset, preset)
    others = _elsewhere(runs_dir, paper_arch, robust, dataset)
    found = f"; a {paper_arch} teacher exists at another scale: {', '.join(others[:3])}" if others else ""
    what = f"no {kind} {paper_arch} teacher{scale} for {dataset} in {Path(runs_dir) / 'pretrain-teacher'}"
    raise MissingTeacher(f"{what}; create it with: {hint}{_scale_warning(preset)}{found}", hint, what, found)
