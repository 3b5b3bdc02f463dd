"""AdaAD figure builders: ``fig2`` (accuracy against the training eps) and the ``fig3`` re-render.

Kept apart from the B-MTARD builders so each module holds one paper's figures; shared record
helpers and the drawing come from :mod:`advkd.report.figures.common`, and
:func:`advkd.report.figures.render_figure` dispatches here.

Sources:

- ``fig2`` — ``<runs_dir>/results.jsonl``: records of one student whose checkpoints were trained
  at different ``train_eps``; clean and AutoAttack accuracy (evaluation eps 8/255) against the
  training eps, one line per teacher architecture (and per method when several are present).
  When no AA record exists the strongest recorded white-box L-inf attack (lowest mean accuracy,
  most points covered) stands in, and the title and JSON say so. Without a usable sweep of ours
  the figure shows the paper's published AA points alone, and its ``notice`` names
  ``advkd report fig2 --plan``, which prints the commands that produce ours.
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
    display_method,
    scale_warning,
)
from advkd.report.figures.style import FigureOptions
from advkd.report.layouts import DATASETS
from advkd.report.match import checkpoint_key, paper_arch, rec_method

PLAN_FIG2 = "advkd report fig2 --plan"
FIG2_GRID = (8.0, 16.0, 24.0, 32.0)  # /255: the training eps of the paper's x axis (the plan's sweep; UNCONFIRMED grid)
ROBUST_PANEL = "{attack}, \u03b5 = 8/255"
XLABEL = "training \u03b5 (/255)"


# ----------------------------------------------------------------------------- fig2


def _teachers(rec: dict[str, Any]) -> tuple[str, ...]:
    """The paper architectures of a record's teachers, by role name."""
    teachers = rec.get("teachers") or {}
    if not isinstance(teachers, dict) or not teachers:
        return ()
    scale = rec.get("scale")
    return tuple(paper_arch(teachers[r], scale) or "?" for r in sorted(teachers))


def _curve(method: str, teachers: tuple[str, ...], several_methods: bool) -> tuple[str, str]:
    """A curve's id and legend label: ``("wrn34-10", "teacher WRN-34-10")``; the method joins both
    when several methods share the figure, and stands alone for a teacher-free one."""
    tid, tlabel = "+".join(teachers), " + ".join(_arch(t) for t in teachers)
    if not teachers:
        return method, display_method(method)
    if several_methods:
        return f"{method}:{tid}", f"{display_method(method)}, teacher {tlabel}"
    return tid, f"teacher {tlabel}"


def fig2_data(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Clean and robust accuracy against the training eps; the paper's points alone (with a
    ``notice`` naming the plan) when the records hold no usable sweep of ours."""
    recs = [r for r in records if _white_box(r) and _at_8_255(r) and _eps_value(r.get("train_eps")) is not None]
    # (dataset, student, scale) -> (method, teachers) -> train eps -> records
    tree: dict[tuple, dict[tuple, dict[float, list]]] = {}
    for r in recs:
        student = paper_arch(r, r.get("scale")) or str(r.get("arch") or "?")
        eps = round(_eps_value(r["train_eps"]) * 255, 6)
        g = tree.setdefault((r.get("dataset"), student, r.get("scale")), {})
        g.setdefault((rec_method(r), _teachers(r)), {}).setdefault(eps, []).append(r)
    best, best_n = None, 0
    for gkey, lines in tree.items():
        n = sum(len(points) for points in lines.values() if len(points) >= 2)
        if n > best_n:
            best, best_n = gkey, n
    if best is None:
        why = (f"no result records of a training-eps sweep in {RESULTS}" if not recs else
               f"no student has records at two or more training eps in {RESULTS} ({len(recs)} usable records)")
        return fig2_paper_only(why)
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
        return fig2_paper_only(f"the training-eps sweep of {_arch(student)} on {DATASETS.get(dataset, dataset)} has no clean-accuracy records")
    all_points = [ck for by_eps in points.values() for ck in by_eps.values()]
    attacks = sorted({a for ck in all_points for a, r in ck.items() if a != "clean" and _linf(r)})
    if not attacks:
        return fig2_paper_only(f"the training-eps sweep of {_arch(student)} on {DATASETS.get(dataset, dataset)} has no L-inf "
                               "robust-accuracy records")

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
    methods = sorted({m for m, _ in points})
    series_clean, series_rob, missing, ours = [], [], [], {}
    for (method, teachers), by_eps in sorted(points.items()):
        cid, label = _curve(method, teachers, len(methods) > 1)
        ours[(method, teachers)] = cid
        xs = sorted(by_eps)
        series_clean.append({"id": cid, "label": label, "x": xs, "y": [_acc(by_eps[e].get("clean")) for e in xs]})
        series_rob.append({"id": cid, "label": label, "x": xs, "y": [_acc(by_eps[e].get(attack)) for e in xs]})
        missing += [f"{label} eps {_eps_text(e / 255)}: no {attack} record" for e in xs if attack not in by_eps[e]]
    rob_name = "AutoAttack" if attack == "aa" else _attack_label(attack)
    ticks = sorted({x for s in series_rob for x in s["x"]})
    who = _arch(student) + ("" if len(methods) > 1 else f" ({display_method(methods[0])})")
    title = f"AdaAD Fig. 2: {who} on {DATASETS.get(dataset, dataset)}"
    if note:
        title += f"\n(no AA records: robust = {attack})"  # why this attack: robust_attack_note
    paper = []
    if attack == "aa" and dataset == "cifar10":
        for s in _fig2_paper_series():
            s["match"] = ours.get(("adaad", (s["teacher"],)), "")
            paper.append(s)
    used = [r for ck in all_points for r in ck.values()]
    return {
        "title": title,
        "dataset": dataset, "student": student, "scale": scale,
        "robust_attack": attack, "robust_attack_note": note, "eval_eps": "8/255",
        "missing": missing,
        **scale_warning(used),
        "checkpoints": sorted({checkpoint_key(r) for r in used}),
        "panels": [
            {"kind": "line", "title": "Clean", "xlabel": XLABEL, "ylabel": "accuracy (%)", "xticks": ticks, "series": series_clean},
            {"kind": "line", "title": ROBUST_PANEL.format(attack=rob_name), "xlabel": XLABEL, "ylabel": "accuracy (%)",
             "xticks": ticks, "series": series_rob, "paper": paper},
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
    return [{"id": f"paper:{t}", "label": f"teacher {_arch(t)} (paper)", "teacher": t, "x": sorted(pts), "y": [pts[e] for e in sorted(pts)]}
            for t, pts in sorted(by_teacher.items())]


def fig2_paper_only(why: str) -> dict[str, Any]:
    """AdaAD Fig. 2 from the paper's numbers alone, with a ``notice`` saying ``why`` and naming the
    plan that produces ours. One panel: the paper prints no clean numbers for Fig. 2."""
    series = _fig2_paper_series()
    notice = f"fig2: {why}; drew the paper's published points only. {PLAN_FIG2} prints the commands that produce ours"
    return {
        "title": "AdaAD Fig. 2: the paper's AutoAttack points, ResNet-18 (AdaAD) on CIFAR-10",
        "dataset": "cifar10", "student": "resnet18", "scale": "", "robust_attack": "aa", "robust_attack_note": "",
        "eval_eps": "8/255", "missing": [f"ours: {why}; {PLAN_FIG2} prints the commands that produce them"], "notice": notice,
        "warning": "", "checkpoints": [],
        "panels": [
            {"kind": "line", "title": ROBUST_PANEL.format(attack="AutoAttack"), "xlabel": XLABEL, "ylabel": "accuracy (%)",
             "xticks": list(FIG2_GRID), "series": [], "paper": series},
        ],
    }


# ----------------------------------------------------------------------------- fig3


def render_fig3(runs_dir: Path, out: Path, run: str | Path | None, options: FigureOptions | None = None) -> dict[str, Any]:
    from advkd.report.figures.weight_loss import plot_landscape
    from advkd.report.landscape import load_landscape

    src = Path(run) if run is not None else default_landscape_json(runs_dir)
    if src.is_dir():
        src = src / LANDSCAPE.name
    elif src.suffix.lower() in (".png", ".pdf", ".svg"):
        src = src.with_suffix(".json")
    if not src.is_file():
        raise AdvkdError(
            f"no landscape data at {src}; compute it with: advkd landscape <PGD-AT and AdaAD checkpoints, e.g. "
            f"epoch-100 ... epoch-180.safetensors> (writes {default_landscape_json(runs_dir)})"
        )
    results = load_landscape(src)
    data = plot_landscape(results, out, options=options)
    data["source"] = str(src)
    return data
