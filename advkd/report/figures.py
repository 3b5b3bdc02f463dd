"""The report's figures: result records or run metrics -> a PNG and the JSON of what it shows.

:func:`render_figure` writes ``out`` (PNG, matplotlib Agg, no pyplot state) and
``out.with_suffix(".json")`` atomically and returns the JSON's data. The data of every figure but
``fig3`` is a list of panels, each ``{"kind": "line"|"bar", "title", "xlabel", "ylabel",
"series": [{"label", "x", "y"}]}`` (bar panels have ``"groups"`` and series without ``x``);
missing values are ``null``. ``fig3`` re-renders a landscape file of :mod:`advkd.landscape`.

Sources:

- ``fig2`` — ``<runs_dir>/results.jsonl``: records of one student whose checkpoints were trained
  at different ``train_eps``; clean and AutoAttack accuracy (evaluation eps 8/255) against the
  training eps, one line per teacher architecture (and per method when several are present).
  When no AA record exists the strongest recorded white-box L-inf attack (lowest mean accuracy,
  most points covered) stands in, and the title and JSON say so.
- ``fig3`` — a landscape JSON written by ``advkd landscape`` (default
  ``<runs_dir>/landscape/landscape.json``; ``run`` may name the file, its PNG or its folder).
- ``bmtard-fig3`` — result records of ``bmtard`` runs: W-Robust (0.5 clean + 0.5 robust) per
  attack for the baseline (``method.ebb=false``, ``method.nlb=false``), +NLB, +EBB and both (the
  default). Runs with a non-default ``tau_*_init`` or ``nlb_beta`` (Tables VII/VIII) are left out.
- ``bmtard-fig4/5/6`` — ``metrics.jsonl`` of one B-MTARD run (``run``; default the newest
  ``distill`` run with method bmtard): per-epoch means of the training loss and relative losses,
  of the teachers' entropies, of the temperatures and loss weights.

Missing data raises :class:`~advkd.errors.AdvkdError` with the command that creates it.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advkd.errors import AdvkdError
from advkd.report.layouts import ARCHS, ATTACKS, DATASETS, METHODS, lookup
from advkd.report.match import ABLATION_DEFAULTS, checkpoint_key, is_knowledge, paper_arch, param_value, rec_method, record_time
from advkd.report.table import MINI_WARNING

__all__ = ["FIGURES", "default_landscape_json", "figure_ids", "render_figure"]

FIGURES: dict[str, str] = {
    "fig2": "AdaAD Fig. 2: clean and AutoAttack accuracy (eval eps 8/255) against the training eps, one line per "
            "teacher architecture (result records of one student trained at several method.eps)",
    "fig3": "AdaAD Fig. 3: weight-loss landscapes (adversarial loss along 10 filter-normalised random directions); "
            "compute them with advkd landscape, this renders its JSON",
    "bmtard-fig3": "B-MTARD Fig. 3: ablation bars, W-Robust per attack for the baseline / +NLB / +EBB / both "
                   "(result records of bmtard runs with method.ebb / method.nlb false)",
    "bmtard-fig4": "B-MTARD Fig. 4: training loss and the relative losses r_adv, r_nat over epochs (metrics of a bmtard run)",
    "bmtard-fig5": "B-MTARD Fig. 5: the teachers' entropies over epochs (metrics of a bmtard run)",
    "bmtard-fig6": "B-MTARD Fig. 6: temperatures tau_adv, tau_nat and loss weights w_adv, w_nat over epochs (metrics of a bmtard run)",
}

RESULTS = "results.jsonl"
LANDSCAPE = Path("landscape") / "landscape.json"
EPS = 8 / 255
EPS_TOL = 0.02 * EPS

# Attack order of the bars (then anything else, sorted).
ATTACK_ORDER = ("fgsm", "pgd10", "pgd20-sat", "pgd20-trades", "cwinf", "cw2", "apgd-ce", "apgd-t", "fab-t", "aa", "square", "rays", "spsa")

VARIANTS = (  # (key, label, ebb, nlb)
    ("baseline", "Baseline", False, False),
    ("nlb", "+NLB", False, True),
    ("ebb", "+EBB", True, False),
    ("both", "+EBB +NLB (B-MTARD)", True, True),
)

HINT_FIG2 = (
    "advkd distill --method adaad --student resnet18 --teacher wrn34-10 --set method.eps=E --set method.step_size=S "
    "--name <one name per E> for E in 8/255 16/255 24/255 32/255 (S = E/4: 2/255 4/255 6/255 8/255), "
    "then advkd attack <each best.safetensors> --suite aa"
)
HINT_BMTARD_FIG3 = (
    "advkd distill --method bmtard --student resnet18 --clean-teacher resnet56 --robust-teacher wrn34-10 "
    "--set method.ebb=false --set method.nlb=false --name <variant> (and ebb/nlb true/false for +NLB, +EBB; both true is "
    "B-MTARD), then advkd attack <each best.safetensors> --suite bmtard-white"
)
HINT_BMTARD_RUN = "advkd distill --method bmtard --student resnet18 --clean-teacher resnet56 --robust-teacher wrn34-10"


def figure_ids() -> list[str]:
    return list(FIGURES)


def default_landscape_json(runs_dir: str | Path) -> Path:
    """Where ``advkd landscape`` writes by default and ``fig3`` reads: ``<runs_dir>/landscape/landscape.json``."""
    return Path(runs_dir) / LANDSCAPE


def _figure_id(fig_id: str) -> str:
    key = str(fig_id).strip().lower()
    if key not in FIGURES:
        try:
            tid = lookup(fig_id)
        except AdvkdError:
            tid = None
        if tid is None or tid.id not in FIGURES:
            raise AdvkdError(f"unknown figure id {fig_id!r}; choose one of: {', '.join(FIGURES)}")
        key = tid.id
    return key


def render_figure(fig_id: str, *, runs_dir: str | Path, out: str | Path, run: str | Path | None = None) -> dict[str, Any]:
    """Render figure ``fig_id`` to ``out`` (PNG) and ``out.with_suffix(".json")``; return the data.

    ``run``: for ``bmtard-fig4/5/6`` a B-MTARD run dir (or its ``metrics.jsonl``); for ``fig3`` a
    landscape JSON (or its PNG, or the folder holding ``landscape.json``). Ignored otherwise.
    """
    key = _figure_id(fig_id)
    runs_dir, out = Path(runs_dir), Path(out)
    if key == "fig3":
        return _fig3(runs_dir, out, run)
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "fig2": lambda: _fig2(_records(runs_dir)),
        "bmtard-fig3": lambda: _bmtard_fig3(_records(runs_dir)),
        "bmtard-fig4": lambda: _dynamics("bmtard-fig4", _bmtard_run(runs_dir, run)),
        "bmtard-fig5": lambda: _dynamics("bmtard-fig5", _bmtard_run(runs_dir, run)),
        "bmtard-fig6": lambda: _dynamics("bmtard-fig6", _bmtard_run(runs_dir, run)),
    }
    data = builders[key]()
    data["figure"] = key
    _write(data, out)
    return data


# ----------------------------------------------------------------------------- helpers


def _records(runs_dir: Path) -> list[dict[str, Any]]:
    from advkd.results import read_records

    return [r for r in read_records(runs_dir / RESULTS) if isinstance(r, dict) and not is_knowledge(r)]


def _eps_value(v: Any) -> float | None:
    if v is None or v == "":
        return None
    x = param_value(v)
    return x if isinstance(x, float) and not isinstance(x, bool) and math.isfinite(x) else None


def _at_8_255(rec: dict[str, Any]) -> bool:
    """Clean records, and L-inf records at eval eps 8/255 (eps absent counts as the default)."""
    if rec.get("attack") == "clean":
        return True
    if not _linf(rec):
        return True  # no L-inf budget to compare (unbounded CW-L2, L0 JSMA, query attacks' own budgets)
    v = _eps_value(rec.get("eps_value", rec.get("eps")))
    return v is None or abs(v - EPS) <= EPS_TOL


def _linf(rec: dict[str, Any]) -> bool:
    return str(rec.get("threat_model") or "").lower() == "linf"


def _white_box(rec: dict[str, Any]) -> bool:
    return "surrogate" not in rec and rec.get("kind") in ("white-box", "clean", None)


def _acc(rec: dict[str, Any] | None) -> float | None:
    if rec is None or rec.get("accuracy") is None:
        return None
    return float(rec["accuracy"])


def _newest_by_attack(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, tuple[float, int, dict[str, Any]]] = {}
    for i, r in enumerate(recs):
        key = (record_time(r), i)
        a = str(r.get("attack"))
        if a not in out or key >= out[a][:2]:
            out[a] = (key[0], key[1], r)
    return {a: v[2] for a, v in out.items()}


def _checkpoints(recs: list[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Records grouped by checkpoint (attack -> newest record), newest checkpoint first."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        groups.setdefault(checkpoint_key(r), []).append(i)
    order = sorted(groups.values(), key=lambda idx: max((record_time(recs[i]), i) for i in idx), reverse=True)
    return [_newest_by_attack([recs[i] for i in idx]) for idx in order]


def _arch(a: str) -> str:
    return ARCHS.get(a, a) or "?"


def _attack_label(a: str) -> str:
    return ATTACKS.get(a, a)


def _eps_text(v: float) -> str:
    k = v * 255
    return f"{k:.3g}/255"


def _mini(recs: list[dict[str, Any]]) -> bool:
    return any(str(r.get("scale") or "") == "mini" for r in recs)


def _none_if_nan(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ----------------------------------------------------------------------------- fig2


def _teacher_key(rec: dict[str, Any]) -> str:
    teachers = rec.get("teachers") or {}
    if not isinstance(teachers, dict) or not teachers:
        return ""
    scale = rec.get("scale")
    return " + ".join(f"{_arch(paper_arch(teachers[r], scale))}" for r in sorted(teachers))


def _fig2(records: list[dict[str, Any]]) -> dict[str, Any]:
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
        "warning": MINI_WARNING if _mini(used) else "",
        "checkpoints": sorted({checkpoint_key(r) for r in used}),
        "panels": [
            {"kind": "line", "title": "Clean accuracy", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": series_clean},
            {"kind": "line", "title": f"{rob_name} accuracy (eps 8/255)", "xlabel": "training eps (/255)", "ylabel": "accuracy (%)",
             "xticks": ticks, "series": series_rob},
        ],
    }


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


def _bmtard_fig3(records: list[dict[str, Any]]) -> dict[str, Any]:
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
        series.append({"label": label, "variant": key, "y": ys, "checkpoint": checkpoint_key(ck["clean"])})
    missing = [label for key, label, _, _ in VARIANTS if key not in chosen]
    teachers = ", ".join(f"{role.replace('_', ' ')} {_arch(a)}" for role, a in tkey)
    title = f"B-MTARD Fig. 3: ablation, {_arch(student)} on {DATASETS.get(dataset, dataset)}"
    if missing:
        title += f" (missing: {', '.join(missing)})"
    used = [r for ck in chosen.values() for r in ck.values()]
    return {
        "title": title, "dataset": dataset, "student": student, "teachers": dict(tkey), "scale": scale,
        "metric": "w_robust", "clean_accuracy": clean, "missing_variants": missing,
        "warning": MINI_WARNING if _mini(used) else "",
        "panels": [{
            "kind": "bar", "title": teachers, "xlabel": "attack", "ylabel": "W-Robust (%) = (clean + robust) / 2",
            "groups": [_attack_label(a) for a in attacks], "attacks": attacks, "series": series,
        }],
    }


# ----------------------------------------------------------------------------- bmtard-fig4/5/6

DYNAMICS: dict[str, tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = {
    # figure -> (title, [(panel title, y label, [(metrics key, legend label)])])
    "bmtard-fig4": ("B-MTARD Fig. 4: training loss and relative losses", [
        ("Training loss (per-epoch mean)", "loss", [
            ("train_loss", "L = w_adv L_adv + w_nat L_nat"), ("train_loss_adv", "L_adv (robust teacher)"),
            ("train_loss_nat", "L_nat (clean teacher)")]),
        ("Relative losses r = L / L(0)", "relative loss", [("train_r_adv", "r_adv"), ("train_r_nat", "r_nat")]),
    ]),
    "bmtard-fig5": ("B-MTARD Fig. 5: teacher entropies", [
        ("Teacher entropy (per-epoch mean, nats)", "entropy (nats)", [
            ("train_entropy_adv", "robust teacher on x' (at tau_adv)"), ("train_entropy_nat", "clean teacher on x (at tau_nat)")]),
    ]),
    "bmtard-fig6": ("B-MTARD Fig. 6: temperatures and loss weights", [
        ("Teacher temperatures (per-epoch mean)", "temperature", [("train_tau_adv", "tau_adv"), ("train_tau_nat", "tau_nat")]),
        ("Loss weights (per-epoch mean)", "weight", [("train_w_adv", "w_adv"), ("train_w_nat", "w_nat")]),
    ]),
}
STATE_KEYS = {"bmtard-fig4": (), "bmtard-fig5": (), "bmtard-fig6": ("method_tau_adv", "method_tau_nat", "method_w_adv", "method_w_nat")}


def _bmtard_run(runs_dir: Path, run: str | Path | None) -> Path:
    if run is not None:
        path = Path(run)
        if path.is_file() and path.name.endswith(".jsonl"):
            path = path.parent
        if not (path / "metrics.jsonl").is_file():
            raise AdvkdError(f"{run} is not a run dir with a metrics.jsonl; pass a B-MTARD run dir (runs/distill/<dataset>/<name>)")
        return path
    from advkd.runs import find_runs

    for info in find_runs(runs_dir, kind="distill"):
        if rec_method({"method": info.config.get("method")}) == "bmtard" and (info.path / "metrics.jsonl").is_file():
            return info.path
    raise AdvkdError(f"no B-MTARD distill run under {runs_dir}; create one with: {HINT_BMTARD_RUN}")


def _dynamics(fig: str, path: Path) -> dict[str, Any]:
    from advkd.runs import read_metrics

    rows = [r for r in read_metrics(path / "metrics.jsonl") if isinstance(r, dict) and "epoch" in r]
    if not rows:
        raise AdvkdError(f"run {path} has no finished epoch in metrics.jsonl yet; let it train (or resume it with advkd distill ... --resume)")
    title, spec = DYNAMICS[fig]
    needed = [k for _, _, keys in spec for k, _ in keys]
    absent = [k for k in needed if not any(k in r for r in rows)]
    if absent:
        raise AdvkdError(f"run {path} has no {', '.join(absent)} in metrics.jsonl (not a B-MTARD run?); create one with: {HINT_BMTARD_RUN}")
    rows = sorted(rows, key=lambda r: int(r["epoch"]))
    x = [int(r["epoch"]) + 1 for r in rows]
    panels = []
    for ptitle, ylabel, keys in spec:
        series = [{"label": lab, "key": k, "x": x, "y": [_none_if_nan(r.get(k)) for r in rows]} for k, lab in keys]
        panels.append({"kind": "line", "title": ptitle, "xlabel": "epoch", "ylabel": ylabel, "series": series})
    cfg_path = path / "config.yaml"
    config: dict[str, Any] = {}
    if cfg_path.is_file():
        import yaml

        try:
            config = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError:
            config = {}
    name = config.get("name") or path.name
    method = config.get("method") or "?"
    state = {k: [_none_if_nan(r.get(k)) for r in rows] for k in STATE_KEYS[fig] if any(k in r for r in rows)}
    return {
        "title": f"{title} ({name}, {method})", "run": str(path), "method": method,
        "method_params": config.get("method_params") or {}, "epochs": x, "panels": panels,
        "end_of_epoch_state": state,
        "warning": MINI_WARNING if str(config.get("scale") or "") == "mini" else "",
    }


# ----------------------------------------------------------------------------- fig3


def _fig3(runs_dir: Path, out: Path, run: str | Path | None) -> dict[str, Any]:
    from advkd.landscape import landscape_json, load_landscape, plot_landscape

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


# ----------------------------------------------------------------------------- drawing


def _write(data: dict[str, Any], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from advkd.checkpoint import atomic_write_text

    panels = data["panels"]
    fig = Figure(figsize=(5.2 * len(panels) + 0.6, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        (_bars if panel["kind"] == "bar" else _lines)(ax, panel)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(True, linewidth=0.3, alpha=0.5)
        if panel["series"]:
            ax.legend(fontsize=7)
    title = data["title"] + ("\nmini scale: not comparable to the paper" if data.get("warning") else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_png(fig, out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
    _readable(out.with_suffix(".json"))


def _readable(path: Path) -> None:
    """Figures are for sharing: rw-r--r-- rather than the 0600 of the atomic temp file."""
    try:
        os.chmod(path, 0o644)
    except OSError:
        pass


def write_png(fig, out: str | Path) -> None:
    """Save a matplotlib Figure as PNG atomically (temp file + rename), mode 0644."""
    from advkd.checkpoint import atomic_write_with

    out = Path(out)
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, format="png"))
    _readable(out)


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _lines(ax, panel: dict[str, Any]) -> None:
    for s in panel["series"]:
        ax.plot(s["x"], [_nan(v) for v in s["y"]], marker="o", markersize=3, linewidth=1.2, label=s["label"])
    if panel.get("xticks"):
        ax.set_xticks(panel["xticks"])
        ax.set_xticklabels([f"{t:g}" for t in panel["xticks"]])
    elif panel["xlabel"] == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _bars(ax, panel: dict[str, Any]) -> None:
    groups, series = panel["groups"], panel["series"]
    width = 0.8 / max(len(series), 1)
    for k, s in enumerate(series):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [_nan(v) for v in s["y"]], width=width, label=s["label"])
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels(groups, fontsize=8)
    values = [v for s in series for v in s["y"] if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max((hi - lo) * 0.3, 1.0)
        ax.set_ylim(max(lo - pad, 0.0), hi + pad)
