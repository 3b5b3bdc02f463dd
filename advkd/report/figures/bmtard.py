"""B-MTARD figure builders: ``bmtard-fig3`` (ablation bars) and ``bmtard-fig4/5/6`` (training dynamics).

Kept apart from the AdaAD builders so each module holds one paper's figures; shared record
helpers and the drawing come from :mod:`advkd.report.figures.common`, and
:func:`advkd.report.figures.render_figure` dispatches here.

Sources:

- ``bmtard-fig3`` — result records of ``bmtard`` runs: W-Robust (0.5 clean + 0.5 robust) per
  attack for the baseline (``method.ebb=false``, ``method.nlb=false``), +NLB, +EBB and both (the
  default). Runs with a non-default ``tau_*_init`` or ``nlb_beta`` (Tables VII/VIII) are left out.
- ``bmtard-fig4/5/6`` — ``metrics.jsonl`` of one B-MTARD run (``run``; default the newest
  ``distill`` run with method bmtard): per-epoch means of the training loss and relative losses,
  of the teachers' entropies, of the temperatures and loss weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.safe_yaml import load_yaml
from advkd.report.figures.common import (
    EPS,
    EPS_TOL,
    _acc,
    _arch,
    _at_8_255,
    _attack_label,
    _checkpoints,
    _eps_value,
    _none_if_nan,
    scale_warning,
)
from advkd.report.layouts import DATASETS
from advkd.report.match import ABLATION_DEFAULTS, checkpoint_key, paper_arch, param_value, rec_method, record_time

# Attack order of the bars (then anything else, sorted).
ATTACK_ORDER = ("fgsm", "pgd10", "pgd20-sat", "pgd20-trades", "cwinf", "cw2", "apgd-ce", "apgd-t", "fab-t", "aa", "square", "rays", "spsa")

VARIANTS = (  # (key, label, ebb, nlb)
    ("baseline", "Baseline", False, False),
    ("nlb", "+NLB", False, True),
    ("ebb", "+EBB", True, False),
    ("both", "+EBB +NLB (B-MTARD)", True, True),
)

HINT_BMTARD_FIG3 = (
    "advkd distill --method bmtard --student resnet18 --clean-teacher resnet56 --robust-teacher wrn34-10 "
    "--set method.ebb=false --set method.nlb=false --name <variant> (and ebb/nlb true/false for +NLB, +EBB; both true is "
    "B-MTARD), then advkd attack <each best.safetensors> --suite bmtard-white"
)
HINT_BMTARD_RUN = "advkd distill --method bmtard --student resnet18 --clean-teacher resnet56 --robust-teacher wrn34-10"


# ----------------------------------------------------------------------------- bmtard-fig3


def _variant(rec: dict[str, Any]) -> str | None:
    params = rec.get("method_params") or {}
    if not isinstance(params, dict):
        params = {}
    defaults = ABLATION_DEFAULTS["bmtard"]
    for k, d in defaults.items():
        if k in ("ebb", "nlb"):
            continue
        v = param_value(params.get(k, d))
        if not (isinstance(v, float) and math.isclose(v, float(d), rel_tol=1e-9, abs_tol=1e-9)):
            return None
    if _eps_value(params.get("eps")) is not None and abs(_eps_value(params.get("eps")) - EPS) > EPS_TOL:
        return None
    flags = []
    for k in ("ebb", "nlb"):
        v = param_value(params.get(k, defaults[k]))
        if not isinstance(v, bool):
            return None
        flags.append(v)
    for key, _, ebb, nlb in VARIANTS:
        if [ebb, nlb] == flags:
            return key
    return None


def bmtard_fig3_data(records: list[dict[str, Any]]) -> dict[str, Any]:
    recs = [r for r in records if rec_method(r) == "bmtard" and "surrogate" not in r and r.get("kind") != "transfer" and _at_8_255(r)]
    tree: dict[tuple, dict[str, list]] = {}
    for r in recs:
        v = _variant(r)
        if v is None:
            continue
        teachers = r.get("teachers") or {}
        scale = r.get("scale")
        tkey = tuple(sorted((role, paper_arch(t, scale)) for role, t in teachers.items())) if isinstance(teachers, dict) else ()
        gkey = (r.get("dataset"), paper_arch(r, scale) or str(r.get("arch") or "?"), tkey, scale)
        tree.setdefault(gkey, {}).setdefault(v, []).append(r)
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    best = None
    for gkey, by_variant in tree.items():
        cks = {}
        for v, rs in by_variant.items():
            for ck in _checkpoints(rs):
                if "clean" in ck and len(ck) > 1:
                    cks[v] = ck
                    break
        newest = max((record_time(r) for ck in cks.values() for r in ck.values()), default=-math.inf)
        rank = (len(cks), newest)
        if len(cks) >= 2 and (best is None or rank > best[0]):
            best, chosen = (rank, gkey), cks
    if best is None:
        have = sorted({v for by in tree.values() for v in by})
        raise AdvkdError(
            f"bmtard-fig3 needs attacked B-MTARD runs of at least two of baseline / +NLB / +EBB / both (found: "
            f"{', '.join(have) or 'none'}); create them with: {HINT_BMTARD_FIG3}"
        )
    dataset, student, tkey, scale = best[1]
    attacks = sorted({a for ck in chosen.values() for a in ck if a != "clean"},
                     key=lambda a: (ATTACK_ORDER.index(a) if a in ATTACK_ORDER else len(ATTACK_ORDER), a))
    series, clean = [], {}
    for key, label, _, _ in VARIANTS:
        ck = chosen.get(key)
        if ck is None:
            continue
        c = _acc(ck["clean"])
        clean[key] = c
        ys = []
        for a in attacks:
            r = _acc(ck.get(a))
            ys.append(None if r is None or c is None else 0.5 * c + 0.5 * r)
        series.append({"id": key, "label": label, "variant": key, "y": ys, "checkpoint": checkpoint_key(ck["clean"])})
    missing = [label for key, label, _, _ in VARIANTS if key not in chosen]
    teachers = ", ".join(f"{role.replace('_', ' ')} {_arch(a)}" for role, a in tkey)
    bars_are = "W-Robust = (clean + robust accuracy) / 2"
    title = f"B-MTARD Fig. 3: ablation, {_arch(student)} on {DATASETS.get(dataset, dataset)}"
    if missing:
        title += f" (missing: {', '.join(missing)})"
    used = [r for ck in chosen.values() for r in ck.values()]
    return {
        "title": title, "dataset": dataset, "student": student, "teachers": dict(tkey), "scale": scale,
        "metric": "w_robust", "metric_definition": bars_are, "clean_accuracy": clean, "missing_variants": missing,
        **scale_warning(used),
        "panels": [{
            "kind": "bar", "title": teachers, "xlabel": "attack", "ylabel": "W-Robust (%)",
            "groups": [_attack_label(a) for a in attacks], "attacks": attacks, "series": series,
        }],
    }


# ----------------------------------------------------------------------------- bmtard-fig4/5/6

DYNAMICS: dict[str, tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = {
    # figure -> (title, [(panel title, y label, [(metrics key, legend label, in the paper's notation)])])
    "bmtard-fig4": ("B-MTARD Fig. 4: training losses", [
        ("Training loss", "loss (epoch mean)", [
            ("train_loss", r"$L = w_{adv} L_{adv} + w_{nat} L_{nat}$"), ("train_loss_adv", r"$L_{adv}$ (robust teacher)"),
            ("train_loss_nat", r"$L_{nat}$ (clean teacher)")]),
        ("Relative loss L / L(0)", "r (epoch mean)", [("train_r_adv", r"$r_{adv}$"), ("train_r_nat", r"$r_{nat}$")]),
    ]),
    "bmtard-fig5": ("B-MTARD Fig. 5: teacher entropies", [
        ("Teacher entropy", "entropy (nats, epoch mean)", [
            ("train_entropy_adv", r"robust teacher on $x'$ at $\tau_{adv}$"), ("train_entropy_nat", r"clean teacher on $x$ at $\tau_{nat}$")]),
    ]),
    "bmtard-fig6": ("B-MTARD Fig. 6: temperatures and loss weights", [
        ("Teacher temperatures", "temperature (epoch mean)", [("train_tau_adv", r"$\tau_{adv}$"), ("train_tau_nat", r"$\tau_{nat}$")]),
        ("Loss weights", "weight (epoch mean)", [("train_w_adv", r"$w_{adv}$"), ("train_w_nat", r"$w_{nat}$")]),
    ]),
}
STATE_KEYS = {"bmtard-fig4": (), "bmtard-fig5": (), "bmtard-fig6": ("method_tau_adv", "method_tau_nat", "method_w_adv", "method_w_nat")}


def bmtard_run_dir(runs_dir: Path, run: str | Path | None) -> Path:
    if run is not None:
        path = Path(run)
        if path.is_file() and path.name.endswith(".jsonl"):
            path = path.parent
        if not (path / "metrics.jsonl").is_file():
            raise AdvkdError(f"{run} is not a run dir with a metrics.jsonl; pass a B-MTARD run dir (runs/distill/<dataset>/<name>)")
        return path
    from advkd.core.runs import find_runs

    for info in find_runs(runs_dir, kind="distill"):
        if rec_method({"method": info.config.get("method")}) == "bmtard" and (info.path / "metrics.jsonl").is_file():
            return info.path
    raise AdvkdError(f"no B-MTARD distill run under {runs_dir}; create one with: {HINT_BMTARD_RUN}")


def dynamics_data(fig: str, path: Path) -> dict[str, Any]:
    from advkd.core.runs import read_metrics

    rows = [r for r in read_metrics(path / "metrics.jsonl") if isinstance(r, dict) and "epoch" in r]
    if not rows:
        raise AdvkdError(f"run {path} has no finished epoch in metrics.jsonl yet; let it train (or resume it with advkd distill ... --resume)")
    title, spec = DYNAMICS[fig]
    needed = [k for _, _, keys in spec for k, _ in keys]
    absent = [k for k in needed if not any(k in r for r in rows)]
    if absent:
        raise AdvkdError(f"run {path} has no {', '.join(absent)} in metrics.jsonl (not a B-MTARD run?); create one with: {HINT_BMTARD_RUN}")
    rows = sorted(rows, key=lambda r: int(r["epoch"]))
    x = [int(r["epoch"]) for r in rows]
    panels = []
    for ptitle, ylabel, keys in spec:
        series = [{"id": k, "label": lab, "key": k, "x": x, "y": [_none_if_nan(r.get(k)) for r in rows]} for k, lab in keys]
        panels.append({"kind": "line", "title": ptitle, "xlabel": "epoch", "ylabel": ylabel, "series": series})
    cfg_path = path / "config.yaml"
    config: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            config = load_yaml(cfg_path, source=str(cfg_path)) or {}
        except AdvkdError:
            config = {}
        if not isinstance(config, dict):
            config = {}
    name = config.get("name") or path.name
    method = config.get("method") or "?"
    state = {k: [_none_if_nan(r.get(k)) for r in rows] for k in STATE_KEYS[fig] if any(k in r for r in rows)}
    return {
        "title": f"{title}, {_arch(str(config.get('paper_arch') or config.get('arch') or '?'))}",
        "run": str(path), "run_name": name, "method": method,
        "method_params": config.get("method_params") or {}, "epochs": x, "panels": panels,
        "end_of_epoch_state": state,
        **scale_warning([config]),
    }
