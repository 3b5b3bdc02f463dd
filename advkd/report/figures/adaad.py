"""AdaAD figure builders: ``fig2`` (accuracy against the training eps) and the ``fig3`` re-render.

Kept apart from the B-MTARD builders so each module holds one paper's figures; shared record
helpers and the drawing come from :mod:`advkd.report.figures.common`, and
:func:`advkd.report.figures.render_figure` dispatches here.

Sources:

- ``fig2`` — ``<runs_dir>/results.jsonl``: records of one student whose checkpoints were trained
  at different ``train_eps``; clean and AutoAttack accuracy (evaluation eps 8/255) against the
  training eps, one line per teacher architecture (and per method when several are present).
  When no AA record exists the strongest recorded white-box L-inf attack (lowest mean accuracy,
  most points covered) stands in, and the title and JSON say so.
- ``fig3`` — a landscape JSON written by ``advkd landscape`` (default
  ``<runs_dir>/landscape/landscape.json``; ``run`` may name the file, its PNG or its folder).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.report.figures.common import (
    LANDSCAPE,
    RESULTS,
    _acc,
    _arch,
    _at_8_255,
    _attack_label,
    _checkpoints,
    _eps_text,
    _eps_value,
    _linf,
    _white_box,
    default_landscape_json,
    scale_warning,
)
from advkd.report.layouts import DATASETS, METHODS
from advkd.report.match import checkpoint_key, paper_arch, rec_method

HINT_FIG2 = (
    "advkd distill --method adaad --student resnet18 --teacher wrn34-10 --set method.eps=E --set method.step_size=S "
    "--name <one name per E> for E in 8/255 16/255 24/255 32/255 (S = E/4: 2/255 4/255 6/255 8/255), "
    "then advkd attack <each best.safetensors> --suite aa"
)


# ----------------------------------------------------------------------------- fig2


def _teacher_key(rec: dict[str, Any]) -> str:
    teachers = rec.get("teachers") or {}
    if not isinstance(teachers, dict) or not teachers:
        return ""
    scale = rec.get("scale")
    return " + ".join(f"{_arch(paper_arch(teachers[r], scale))}" for r in sorted(teachers))


def fig2_data(records: list[dict[str, Any]]) -> dict[str, Any]:
    recs = [r for r in records if _white_box(r) and _at_8_255(r) and _eps_value(r.get("train_eps")) is not None]
    # (dataset, student, scale) -> (method, teacher) -> train eps -> records
    tree: dict[tuple, dict[tuple, dict[float, list]]] = {}
    for r in recs:
        student = paper_arch(r, r.get("scale")) or str(r.get("arch") or "?")
        eps = round(_eps_value(r["train_eps"]) * 255, 6)
        g = tree.setdefault((r.get("dataset"), student, r.get("scale")), {})
        g.setdefault((rec_method(r), _teacher_key(r)), {}).setdefault(eps, []).append(r)
    best, best_n = None, 0
    for gkey, lines in tree.items():
        n = sum(len(points) for points in lines.values() if len(points) >= 2)
        if n > best_n:
            best, best_n = gkey, n
    if best is None:
        if not recs:  # no run at all: the paper's own points, as a table with no runs shows the paper's numbers
            return fig2_paper_only()
        raise AdvkdError(
            f"fig2 needs result records of one student trained at two or more training eps (found "
            f"{len(recs)} usable records in {RESULTS}); create them with: {HINT_FIG2}"
        )
    dataset, student, scale = best
    lines = {k: v for k, v in tree[best].items() if len(v) >= 2}
    # per point: the newest checkpoint that has a clean record
    points: dict[tuple, dict[float, dict[str, dict[str, Any]]]] = {}
    for lkey, by_eps in lines.items():
        for eps, rs in by_eps.items():
            for ck in _checkpoints(rs):
                if "clean" in ck:
                    points.setdefault(lkey, {})[eps] = ck
                    break
    points = {k: v for k, v in points.items() if len(v) >= 2}
    if not points:
        raise AdvkdError(f"fig2: no clean-accuracy records for the eps sweep of {student} on {dataset}; run advkd attack --suite aa on those checkpoints")
    all_points = [ck for by_eps in points.values() for ck in by_eps.values()]
    attacks = sorted({a for ck in all_points for a, r in ck.items() if a != "clean" and _linf(r)})
    if not attacks:
        raise AdvkdError(f"fig2: the eps sweep of {student} on {dataset} has no L-inf robust-accuracy records; run advkd attack --suite aa on its checkpoints")

    def score(a: str) -> tuple:
        cover = sum(a in ck for ck in all_points)
        accs = [_acc(ck[a]) for ck in all_points if a in ck]
        accs = [x for x in accs if x is not None]
        return (cover, a == "aa", -(sum(accs) / len(accs)) if accs else -math.inf)

    attack = max(attacks, key=score)
    if "aa" in attacks and score("aa")[0] == score(attack)[0]:
        attack = "aa"
    note = ""
    if attack != "aa":
        note = (f"AutoAttack records missing; robust accuracy under {_attack_label(attack)} ({attack}), the strongest "
                f"white-box attack recorded for these checkpoints")
    methods = {m for m, _ in points}
    series_clean, series_rob, missing = [], [], []
    for (method, teacher), by_eps in sorted(points.items()):
        parts = [METHODS.get(method, method)] if len(methods) > 1 or not teacher else []
        if teacher:
            parts.append(f"teacher {teacher}")
        label = " · ".join(parts)
        xs = sorted(by_eps)
        series_clean.append({"label": label, "x": xs, "y": [_acc(by_eps[e].get("clean")) for e in xs]})
        series_rob.append({"label": label, "x": xs, "y": [_acc(by_eps[e].get(attack)) for e in xs]})
        missing += [f"{label} eps {_eps_text(e / 255)}: no {attack} record" for e in xs if attack not in by_eps[e]]
    rob_name = "AA" if attack == "aa" else (f"{_attack_label(attack)} ({attack})" if _attack_label(attack) != attack else attack)
    ticks = sorted({x for s in series_rob for x in s["x"]})
    title = f"AdaAD Fig. 2: accuracy vs training eps, {_arch(student)} on {DATASETS.get(dataset, dataset)}"
    if note:
        title += f"\n(no AA records: robust = {rob_name}, strongest available white-box attack)"
    used = [r for ck in all_points for r in ck.values()]
    return {
        "title": title,
        "dataset": dataset, "student": student, "scale": scale,
        "robust_attack": attack, "robust_attack_note": note, "eval_eps": "8/255",
        "missing": missing,
        **scale_warning(used),
        "checkpoints": sorted({checkpoint_key(r) for r in used}),
        "panels": [
            {"kind": "line", "title": "Clean accuracy", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": series_clean},
            {"kind": "line", "title": f"{rob_name} accuracy (eps 8/255)", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": series_rob, "paper": _fig2_paper_series() if attack == "aa" and dataset == "cifar10" else []},
        ],
    }


def _fig2_paper_series() -> list[dict[str, Any]]:
    """The paper's AdaAD Fig. 2 AA points (its text quotes three), one series per teacher."""
    from advkd.report.paper import table_rows

    by_teacher: dict[str, dict[float, float]] = {}
    for row in table_rows("adaad-fig2"):
        m = re.search(r"eps=(\d+)/255", row.note)
        if m and row.attack == "aa":
            by_teacher.setdefault(row.teacher, {})[float(m.group(1))] = row.number
    return [{"label": f"paper: teacher {_arch(t)}", "x": sorted(pts), "y": [pts[e] for e in sorted(pts)]} for t, pts in sorted(by_teacher.items())]


def fig2_paper_only() -> dict[str, Any]:
    """AdaAD Fig. 2 from the paper's numbers alone, with the command that adds ours."""
    series = _fig2_paper_series()
    ticks = sorted({x for s in series for x in s["x"]})
    return {
        "title": "AdaAD Fig. 2: the paper's AA points only (no runs of ours yet)",
        "dataset": "cifar10", "student": "resnet18", "scale": "", "robust_attack": "aa", "robust_attack_note": "",
        "eval_eps": "8/255", "missing": [f"ours: no eps sweep yet; create it with: {HINT_FIG2}"], "warning": "", "checkpoints": [],
        "panels": [
            {"kind": "line", "title": "Clean accuracy (the paper prints no numbers)", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": []},
            {"kind": "line", "title": "AA accuracy (eps 8/255)", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": [], "paper": series},
        ],
    }


# ----------------------------------------------------------------------------- fig3


def render_fig3(runs_dir: Path, out: Path, run: str | Path | None) -> dict[str, Any]:
    from advkd.report.landscape import landscape_json, load_landscape, plot_landscape

    src = Path(run) if run is not None else default_landscape_json(runs_dir)
    if src.is_dir():
        src = src / LANDSCAPE.name
    elif src.suffix.lower() == ".png":
        src = src.with_suffix(".json")
    if not src.is_file():
        raise AdvkdError(
            f"no landscape data at {src}; compute it with: advkd landscape <PGD-AT and AdaAD checkpoints, e.g. "
            f"epoch-100 ... epoch-180.safetensors> (writes {default_landscape_json(runs_dir)})"
        )
    results = load_landscape(src)
    plot_landscape(results, out)
    data = landscape_json(results)
    data["source"] = str(src)
    return data
