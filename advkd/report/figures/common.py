"""Shared pieces of the report's figures: constants, result-record helpers, PNG/JSON writing and drawing.

The AdaAD builders (:mod:`advkd.report.figures.adaad`) and the B-MTARD builders
(:mod:`advkd.report.figures.bmtard`) both pick records, label attacks and architectures, and hand
their data to :func:`write_figure`; those pieces live here so that the two builder modules depend on
this one and never on each other or on :mod:`advkd.report.figures` (common <- adaad/bmtard <- figures).

:func:`write_figure` draws a figure's ``panels`` (each ``{"kind": "line"|"bar", "title", "xlabel",
"ylabel", "series": [{"label", "x", "y"}]}``; bar panels have ``"groups"`` and series without
``x``; missing values are ``null``) with matplotlib Agg, no pyplot state, and writes the PNG and
its JSON atomically, mode 0644.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.report.layouts import ARCHS, ATTACKS
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
    return ARCHS.get(a, a) or "?"


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



# ----------------------------------------------------------------------------- drawing


def write_figure(data: dict[str, Any], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from advkd.core.files import atomic_write_text

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
        if panel["series"] or panel.get("paper"):
            ax.legend(fontsize=7)
    title = data["title"] + (f"\n{data.get('scale') or 'mini'} scale: not comparable to the paper" if data.get("warning") else "")
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


IMAGE_FORMATS = ("png", "pdf", "svg")  # pdf and svg are vector: what a paper needs


def image_format(out: str | Path) -> str:
    """The format a figure file's suffix asks for; AdvkdError for any other suffix."""
    fmt = Path(out).suffix.lstrip(".").lower()
    if fmt not in IMAGE_FORMATS:
        raise AdvkdError(f"figure file {out}: the suffix must be one of {', '.join('.' + f for f in IMAGE_FORMATS)}")
    return fmt


def write_png(fig, out: str | Path) -> None:
    """Save a matplotlib Figure atomically (temp file + rename), mode 0644, in the format of its
    suffix (.png at 200 dpi, or vector .pdf / .svg with embedded TrueType fonts)."""
    import matplotlib

    from advkd.core.files import atomic_write_with

    out = Path(out)
    fmt = image_format(out)
    with matplotlib.rc_context(PUBLISHER_FONTS):
        atomic_write_with(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=200 if fmt == "png" else None))
    _readable(out)


# TrueType (Type 42) fonts embedded in PDF/PS, text kept as text in SVG: publishers' PDF checkers
# (IEEE PDF eXpress among them) reject matplotlib's default Type 3 fonts
PUBLISHER_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per series: readable in grey print


def _lines(ax, panel: dict[str, Any]) -> None:
    for k, s in enumerate(panel["series"]):
        ax.plot(s["x"], [_nan(v) for v in s["y"]], marker=MARKERS[k % len(MARKERS)], markersize=4, linewidth=1.2, label=s["label"])
    for k, s in enumerate(panel.get("paper") or []):  # the paper's published points beside ours: hollow, dashed
        ax.plot(s["x"], s["y"], linestyle="--", marker=MARKERS[k % len(MARKERS)], markersize=5, markerfacecolor="none", color="0.3",
                linewidth=0.9, label=s["label"])
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # no "+1e-3" offset above the axis
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
