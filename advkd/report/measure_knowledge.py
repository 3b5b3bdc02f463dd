"""B-MTARD Table I from a finished ``bmtard`` run: the teachers' knowledge scale before and after balance.

Knowledge scale = log C minus the mean entropy of the teacher's softmax (paper Eq. 7). As
Entropy-Based Balance measures it, the clean teacher sees clean test images and the robust
teacher sees the student's adversarial images (the run's own inner maximisation: CE-PGD on the
student). "Before" uses temperature 1, "after" the run's final temperatures from its method state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.core.runs import BEST, METRICS, find_runs, read_metrics
from advkd.data.batches import to_float
from advkd.data.loaders import load_split
from advkd.evaluation.records import RESULTS_FILE, append_records, now_iso, read_records, results_path
from advkd.evaluation.sources import load_checkpoint_for
from advkd.methods import build
from advkd.report.knowledge import knowledge_records


def newest_bmtard_run(runs_dir: Path, dataset: str = "cifar10") -> Path:
    for run in find_runs(runs_dir, kind="distill", dataset=dataset):
        if run.config.get("method") == "bmtard" and run.complete:
            return run.path
    raise AdvkdError(
        f"no finished bmtard run on {dataset} under {runs_dir}; train one first, e.g. "
        "advkd distill --method bmtard --student resnet18 --dataset cifar10 --preset mini"
    )


@torch.no_grad()
def _logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def knowledge_scale_records(run: Path, *, data_dir: str | Path, n_examples: int = 1000, batch_size: int = 250, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Compute the four Table I records of ``run`` (a bmtard run dir)."""
    student, meta = load_checkpoint_for(run / BEST, device=device)
    teachers = {}
    for role in ("clean_teacher", "robust_teacher"):
        record = (meta.get("teachers") or {}).get(role, {})
        source = record.get("source")
        if not source or not Path(source).is_file():
            raise AdvkdError(f"run {run} does not name a readable {role} checkpoint ({source!r})")
        # the teacher the student was trained with: the file's sha256 as the student recorded it
        teachers[role], _ = load_checkpoint_for(source, device=device, expect={"dataset": meta["dataset"]}, sha256=record.get("sha256") or None)
    rows = read_metrics(run / METRICS)
    if not rows or "method_tau_adv" not in rows[-1]:
        raise AdvkdError(f"{run / METRICS} has no B-MTARD temperatures (method_tau_adv / method_tau_nat)")
    tau_adv, tau_nat = float(rows[-1]["method_tau_adv"]), float(rows[-1]["method_tau_nat"])
    data = load_split(meta["dataset"], "test", data_dir)
    data = data.head(min(n_examples, len(data)))
    params = {k: v for k, v in (meta.get("config") or {}).get("method_params", {}).items() if k in ("eps", "step_size", "steps", "init", "init_std", "clamp_init")}
    method = build("bmtard", {"clean_teacher": teachers["clean_teacher"], "robust_teacher": teachers["robust_teacher"]}, num_classes=int(meta["num_classes"]), dataset=meta["dataset"], **params)
    x = to_float(data.images.to(device))
    y = data.labels.to(device)
    x_adv = torch.cat([method.perturb(student, x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    clean_logits = _logits(teachers["clean_teacher"], x, batch_size)
    robust_logits = _logits(teachers["robust_teacher"], x_adv, batch_size)
    record_meta = {
        "checkpoint": str(run / BEST), "sha256": sha256_file(run / BEST), "dataset": meta["dataset"], "method": "bmtard",
        "arch": meta.get("arch"), "paper_arch": meta.get("paper_arch"), "teachers": meta.get("teachers"), "preset": meta.get("preset"),
        "scale": meta.get("scale"), "method_params": (meta.get("config") or {}).get("method_params", {}), "run": run.name, "time": now_iso(),
    }
    return knowledge_records(clean_logits.cpu(), robust_logits.cpu(), tau_nat=tau_nat, tau_adv=tau_adv, meta=record_meta)


def ensure_knowledge_records(runs_dir: Path, *, data_dir: str | Path, device: str | torch.device = "cpu", dataset: str = "cifar10") -> None:
    """Append Table I records for the newest finished bmtard run, unless it already has them."""
    run = newest_bmtard_run(runs_dir, dataset)
    sha = sha256_file(run / BEST)
    if any(r.get("kind") == "knowledge_scale" and r.get("sha256") == sha for r in read_records(runs_dir / RESULTS_FILE)):
        return
    append_records(results_path(runs_dir), knowledge_scale_records(run, data_dir=data_dir, device=device))
