"""A training run's fully resolved config and run dir, without the run (``--print-config``).

The same steps as :func:`advkd.training.loop.prepare` up to the config it saves -- canonical names,
the preset's default teachers, each teacher resolved to its checkpoint, the run name -- and the
same serializer as the run's ``config.yaml``. It loads no data and writes, locks and downloads
nothing. A teacher the run could not find yet (no store run of that arch, or a RobustBench model
not downloaded) does not stop it: the config is printed without that teacher's checkpoint, and a
comment names what is missing and the command that makes it, as the run's own error would.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from advkd.data.loaders import dataset_info
from advkd.evaluation.sources import ROBUSTBENCH, robustbench_id, robustbench_weights
from advkd.methods import params_for
from advkd.models import canonical_arch
from advkd.training.config import TrainConfig
from advkd.training.loop import canonical_config, named
from advkd.training.rundir import config_yaml
from advkd.training.teachers import MissingTeacher, Teacher, resolve_teacher, teacher_records


@dataclass
class DryRun:
    """What a run would save and where: ``cfg`` is exactly what its ``config.yaml`` would hold."""

    cfg: TrainConfig
    path: Path
    missing: dict[str, str] = field(default_factory=dict)  # role -> why its teacher cannot be resolved now, and the fix

    def text(self) -> str:
        """``config.yaml``'s text after comment lines naming the run dir and any missing teacher
        (still valid YAML: it parses to the config)."""
        where = f"# run dir: {self.path}" + (" (exists: a run there needs --resume or another --name)" if self.path.exists() else "")
        lines = ["# advkd --print-config: nothing was trained or written", where]
        lines += [f"# missing {role}: {' '.join(why.split())}" for role, why in self.missing.items()]
        return "\n".join(lines) + "\n" + config_yaml(self.cfg)


def dry_run(cfg: TrainConfig, *, runs_dir: str | Path, data_dir: str | Path | None = None) -> DryRun:
    """The config and run dir that ``advkd.training.loop.run(cfg, ...)`` would use; writes nothing."""
    cfg = canonical_config(cfg)
    params_for(cfg.method, cfg.method_params)  # a bad --set method.KEY refused here, as the run's build() would
    num_classes = dataset_info(cfg.dataset).num_classes
    found: dict[str, Teacher] = {}
    archs: dict[str, str] = {}
    missing: dict[str, str] = {}
    for role, spec in sorted(cfg.teachers.items()):
        spec = spec.strip()
        if spec.startswith(ROBUSTBENCH):
            weights = robustbench_weights(spec, dataset=cfg.dataset, data_dir=data_dir)
            if not weights.is_file():
                archs[role] = f"robustbench:{robustbench_id(spec)}"
                missing[role] = f"{spec} is not downloaded yet; the run downloads it to {weights} (needs network)"
                continue
        try:
            found[role] = resolve_teacher(spec, role=role, dataset=cfg.dataset, num_classes=num_classes, runs_dir=runs_dir, device="cpu",
                                          preset=cfg.preset_file or cfg.preset, arch_map=cfg.arch_map, data_dir=data_dir)
            archs[role] = found[role].paper_arch
        except MissingTeacher as e:
            archs[role] = canonical_arch(spec)
            missing[role] = str(e)
    cfg, path = named(dataclasses.replace(cfg, resolved_teachers=teacher_records(found)), archs, runs_dir)
    return DryRun(cfg, path, missing)
