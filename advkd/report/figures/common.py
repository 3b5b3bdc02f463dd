"""Shared pieces of the report's figures: constants, result-record helpers and display names.

The AdaAD builders (:mod:`advkd.report.figures.adaad`) and the B-MTARD builders
(:mod:`advkd.report.figures.bmtard`) both pick records, label attacks and architectures, and hand
their data to :func:`advkd.report.figures.draw.write_figure`; those pieces live here so that the two
builder modules depend on this one and never on each other or on :mod:`advkd.report.figures`
(common <- adaad/bmtard <- figures). The drawing is :mod:`advkd.report.figures.draw`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from advkd.report.layouts import ARCHS, ATTACKS, METHODS
from advkd.report.match import checkpoint_key, is_knowledge, param_value, record_time

RESULTS = "results.jsonl"
LANDSCAPE = Path("landscape") / "landscape.json"
EPS = 8 / 255
EPS_TOL = 0.02 * EPS


def default_landscape_json(runs_dir: str | Path) -> Path:
    """Where ``advkd landscape`` writes by default and ``fig3`` reads: ``<runs_dir>/landscape/landscape.json``."""
    return Path(runs_dir) / LANDSCAPE


# ----------------------------------------------------------------------------- helpers


def read_results(runs_dir: Path) -> list[dict[str, Any]]:
    from advkd.evaluation.records import read_records

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
    return display_arch(a)


_ARCH_PATTERNS = (  # registry names the papers never print, written the way they write their kin
    (re.compile(r"(preact)?resnet-?(\d+)(-[ab])?"), lambda m: f"{'PreAct' if m[1] else ''}ResNet-{m[2]}" + (f" ({m[3][1:].upper()})" if m[3] else "")),
    (re.compile(r"wrn-?(\d+)-(\d+)"), lambda m: f"WRN-{m[1]}-{m[2]}"),
    (re.compile(r"tiny(cnn|mlp)"), lambda m: f"Tiny{m[1].upper()}"),
)


def display_arch(a: str | None) -> str:
    """An architecture as the papers print it: ``resnet8`` -> ``ResNet-8``, ``wrn34-10`` -> ``WRN-34-10``."""
    if not a:
        return "?"
    if a in ARCHS:
        return ARCHS[a]
    for pattern, name in _ARCH_PATTERNS:
        m = pattern.fullmatch(a.lower())
        if m:
            return name(m)
    return a


def display_method(m: str | None) -> str:
    """A method as the papers print it: ``adaad`` -> ``AdaAD``, ``pgd-at`` -> ``PGD-AT``."""
    return METHODS.get(str(m), str(m)) if m else ""


def _attack_label(a: str) -> str:
    return ATTACKS.get(a, a)


def _eps_text(v: float) -> str:
    k = v * 255
    return f"{k:.3g}/255"


def reduced_scale(recs: list[dict[str, Any]]) -> str:
    """``mini`` or ``small`` when any record comes from that reduced scale (mini first), else ''."""
    scales = {str(r.get("scale") or "") for r in recs}
    return next((s for s in ("mini", "small") if s in scales), "")


def scale_warning(recs: list[dict[str, Any]]) -> dict[str, str]:
    """The figure's ``warning`` and ``scale`` fields: the table footer's sentence for that scale."""
    from advkd.report.table import SCALE_MARKS

    scale = reduced_scale(recs)
    return {"warning": SCALE_MARKS[scale][1], "scale": scale} if scale else {"warning": "", "scale": ""}


def _none_if_nan(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
