"""Drawing the report's figures: panels -> one matplotlib Figure at a paper size -> PNG, PDF or SVG.

Every figure (``fig2``, the B-MTARD figures and the landscape of ``fig3``) is a list of panels,
each ``{"kind": "line"|"bar", "title", "xlabel", "ylabel", "series": [{"id", "label", "x", "y"}]}``
(bar panels have ``"groups"`` and series without ``x``; line panels may have ``"paper"`` series,
drawn as hollow markers in the colour of the series whose id is their ``"match"``, ``"xticks"``,
``"yscale"``, and series may carry a ``"low"``/``"high"`` band; missing values are ``null``).

One drawing for all of them keeps them alike: each curve one colour (colour-blind safe) and
marker across panels, one legend below the panels, the title on top, everything at 8-9 pt at the
printed size (:mod:`advkd.report.figures.style`). A panel without a single finite value is not
drawn. Files are written atomically, mode 0644, with the publishers' fonts.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.report.figures.style import FONT_PT, TITLE_PT, FigureOptions, paper_rc, resolve_labels

__all__ = ["IMAGE_FORMATS", "apply_options", "curves", "image_format", "render_panels", "save_figure", "write_figure"]

IMAGE_FORMATS = ("png", "pdf", "svg")  # pdf and svg are vector: what a paper needs
PNG_DPI = 300  # a raster figure at its printed size, as journals ask

# Okabe & Ito's colour-blind-safe palette (yellow last: faint on white), markers and hatches for grey print
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "++++", "oooo", "----")
CHAR_WIDTH = 0.55  # mean glyph width of DejaVu Sans, in font sizes: whether bar labels need turning


def image_format(out: str | Path) -> str:
    """The format a figure file's suffix asks for; AdvkdError for any other suffix."""
    fmt = Path(out).suffix.lstrip(".").lower()
    if fmt not in IMAGE_FORMATS:
        raise AdvkdError(f"figure file {out}: the suffix must be one of {', '.join('.' + f for f in IMAGE_FORMATS)}")
    return fmt


def readable(path: Path) -> None:
    """Figures are for sharing: rw-r--r-- rather than the 0600 of the atomic temp file."""
    try:
        os.chmod(path, 0o644)
    except OSError:
        pass


def save_figure(fig, out: str | Path) -> None:
    """Save a matplotlib Figure atomically (temp file + rename), mode 0644, in the format of its
    suffix (.png at 300 dpi, or vector .pdf / .svg) with the publishers' fonts."""
    import matplotlib

    from advkd.core.files import atomic_write_with

    out = Path(out)
    fmt = image_format(out)
    with matplotlib.rc_context(paper_rc()):
        atomic_write_with(out, lambda f: fig.savefig(f, format=fmt, dpi=PNG_DPI if fmt == "png" else None))
    readable(out)


# ----------------------------------------------------------------------------- curves and options


def _series(panel: dict[str, Any]) -> list[dict[str, Any]]:
    return list(panel.get("series") or []) + list(panel.get("paper") or [])


def _id(s: dict[str, Any]) -> str:
    return str(s.get("id") or s["label"])


def curves(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(id, label)`` of every curve, once, in legend order (panel by panel, ours before the paper's)."""
    out: dict[str, str] = {}
    for panel in panels:
        for s in _series(panel):
            out.setdefault(_id(s), s["label"])
    return list(out.items())


def _has_data(panel: dict[str, Any]) -> bool:
    return any(v is not None and math.isfinite(float(v)) for s in _series(panel) for v in s["y"])


def apply_options(data: dict[str, Any], options: FigureOptions) -> None:
    """Drop panels without data, then put the user's labels and title into ``data`` (so its JSON
    shows what the figure shows); AdvkdError for a label naming no curve, or nothing to draw."""
    panels = [p for p in data["panels"] if _has_data(p)]
    if not panels:
        raise AdvkdError(f"{data.get('figure') or 'the figure'}: no finite value to draw")
    data["panels"] = panels
    new = resolve_labels(curves(panels), options.labels)
    for panel in panels:
        for s in _series(panel):
            s["label"] = new.get(_id(s), s["label"])
    if options.title is not None:
        data["title"] = options.title
    data["size"] = options.size


def write_figure(data: dict[str, Any], out: Path, options: FigureOptions | None = None) -> None:
    """Draw ``data`` (a figure's panels, title and warning) to ``out`` and its JSON beside it."""
    from advkd.core.files import atomic_write_text

    options = options or FigureOptions()
    apply_options(data, options)
    render_panels(data["panels"], out, title=data.get("title") or "", warning=_warning_line(data), options=options)
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
    readable(out.with_suffix(".json"))


def scale_line(scale: str) -> str:
    """The line a reduced-scale figure carries on it ('' at paper scale)."""
    return f"{scale} scale: not comparable to the paper" if scale else ""


def _warning_line(data: dict[str, Any]) -> str:
    return scale_line(data.get("scale") or "mini") if data.get("warning") else ""


# ----------------------------------------------------------------------------- drawing


def _wrap(fig, text: str, width_in: float, pt: float) -> str:
    """Break ``text`` between words where the renderer says a line would pass ``width_in`` at
    ``pt``; a line holding mathtext (``$...$``) stays whole."""
    out = []
    for line in text.split("\n"):
        words, cur = line.split(" "), ""
        if "$" in line:
            out.append(line)
            continue
        for w in words:
            trial = f"{cur} {w}" if cur else w
            if cur and _text_width(fig, trial, pt) > width_in:
                out.append(cur)
                cur = w
            else:
                cur = trial
        out.append(cur)
    return "\n".join(out)


def _legend_columns(widths: list[float], width_in: float) -> int:
    """The most legend columns (filled column by column, as matplotlib does) whose measured
    labels (``widths``, inches) fit in ``width_in``."""
    from matplotlib import rcParams

    pt = FONT_PT / 72
    handle = (rcParams["legend.handlelength"] + rcParams["legend.handletextpad"]) * pt
    gap = rcParams["legend.columnspacing"] * pt
    border = 2 * rcParams["legend.borderpad"] * pt
    for ncol in range(len(widths), 1, -1):
        rows = math.ceil(len(widths) / ncol)
        cols = [widths[i:i + rows] for i in range(0, len(widths), rows)]
        if len(cols) == ncol and sum(max(c) + handle for c in cols) + gap * (ncol - 1) + border <= width_in:
            return ncol
    return 1


def _text_width(fig, text: str, pt: float = FONT_PT) -> float:
    """Width in inches of ``text`` at ``pt``, as the renderer will draw it (mathtext too)."""
    from matplotlib.text import Text

    t = Text(0, 0, text, fontsize=pt, figure=fig)
    return t.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi


def render_panels(panels: list[dict[str, Any]], out: str | Path, *, title: str, warning: str, options: FigureOptions) -> None:
    """Draw ``panels`` side by side (rows of ``canvas.max_cols``) at the chosen size and save them."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    canvas = options.canvas
    n = len(panels)
    cols = min(n, canvas.max_cols)
    rows = math.ceil(n / cols)
    entries = curves(panels)
    labels = [lab for _, lab in entries]
    styles = _styles(panels)
    with matplotlib.rc_context(paper_rc()):
        fig = Figure(figsize=(canvas.width, rows * canvas.row_height(cols)), layout="constrained")
        FigureCanvasAgg(fig)
        heading = "\n".join(t for t in (_wrap(fig, title, canvas.width - 0.1, TITLE_PT) if title else "", warning) if t)
        ncol = _legend_columns([_text_width(fig, lab) for lab in labels], canvas.width) if labels else 1
        legend_rows = math.ceil(len(labels) / ncol) if labels else 0
        fig.set_size_inches(canvas.width, rows * canvas.row_height(cols) + (heading.count("\n") + 1) * TITLE_PT * 1.3 / 72 * bool(heading)
                            + legend_rows * FONT_PT * 1.45 / 72 + 0.06 * bool(labels))
        fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.06, hspace=0.08)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        handles: dict[str, Any] = {}
        for ax, panel in zip(axes, panels):
            (_bars if panel["kind"] == "bar" else _lines)(ax, panel, styles, handles, canvas.width / cols)
            if panel.get("title"):  # centred on the axes, which the tick labels and y label narrow by ~0.5 in
                ax.set_title(_wrap(fig, panel["title"], canvas.width / cols - 0.45, FONT_PT))
            ax.set_xlabel(panel["xlabel"])
            ax.set_ylabel(panel["ylabel"])
            ax.grid(True, alpha=0.5, axis="y" if panel["kind"] == "bar" else "both")
            ax.set_axisbelow(True)
        for ax in axes[n:]:
            ax.set_visible(False)
        if heading:
            fig.suptitle(heading)
        if labels:
            fig.legend([handles[i] for i, _ in entries], labels, loc="outside lower center", ncols=ncol)
        save_figure(fig, out)


def _styles(panels: list[dict[str, Any]]) -> dict[str, int]:
    """Curve id -> style index; a paper series takes the index of the series it ``match``es."""
    out: dict[str, int] = {}
    for s in (s for p in panels for s in p.get("series") or []):
        out.setdefault(_id(s), len(set(out.values())))
    for s in (s for p in panels for s in p.get("paper") or []):
        out.setdefault(_id(s), out.get(str(s.get("match")), len(set(out.values()))))
    return out


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _lines(ax, panel: dict[str, Any], styles: dict[str, int], handles: dict[str, Any], width_in: float) -> None:
    for s in panel.get("series") or []:
        k = styles[_id(s)]
        color = COLORS[k % len(COLORS)]
        (line,) = ax.plot(s["x"], [_nan(v) for v in s["y"]], color=color, marker=MARKERS[k % len(MARKERS)])
        handles.setdefault(_id(s), line)
        if s.get("low") is not None and s.get("high") is not None:  # a spread (landscape: min..max over directions)
            ax.fill_between(s["x"], [_nan(v) for v in s["low"]], [_nan(v) for v in s["high"]], color=color, alpha=0.15, linewidth=0)
    for s in panel.get("paper") or []:  # the paper's published points beside ours: hollow markers, no line between quotes
        k = styles[_id(s)]
        (line,) = ax.plot(s["x"], [_nan(v) for v in s["y"]], linestyle="none", marker=MARKERS[k % len(MARKERS)], markersize=5.5,
                          markerfacecolor="none", markeredgewidth=1.1, color=COLORS[k % len(COLORS)])
        handles.setdefault(_id(s), line)
    if panel.get("yscale"):
        from matplotlib.ticker import NullFormatter, StrMethodFormatter

        ax.set_yscale(panel["yscale"])
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 1, 10, 100 rather than 10^0, 10^1
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # no "+1e-3" offset above the axis
    if panel.get("xticks"):
        ax.set_xticks(panel["xticks"])
        ax.set_xticklabels([f"{t:g}" for t in panel["xticks"]])
    else:  # a tick per 0.35 in (epochs) or 0.5 in, so tick labels never touch; "-0.5", not "-0.50"
        from matplotlib.ticker import MaxNLocator, StrMethodFormatter

        epochs = panel["xlabel"] == "epoch"
        ax.xaxis.set_major_locator(MaxNLocator(nbins=max(int(width_in / (0.35 if epochs else 0.5)), 3), integer=epochs,
                                               steps=[1, 2, 5, 10] if epochs else [1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    xs = [x for s in _series(panel) for x in s["x"]]
    if xs and min(xs) == max(xs):  # one x only: a readable span around it, not matplotlib's +-0.055
        ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ys = [v for s in _series(panel) for v in s["y"] if v is not None and math.isfinite(v)]
    if ys and not panel.get("yscale") and max(ys) - min(ys) < 1.0 and panel["ylabel"].endswith("(%)"):
        mid = (max(ys) + min(ys)) / 2  # percentages that barely differ: a +-1 pp axis, not a magnified one
        ax.set_ylim(mid - 1.0, mid + 1.0)


def _bars(ax, panel: dict[str, Any], styles: dict[str, int], handles: dict[str, Any], width_in: float) -> None:
    groups, series = panel["groups"], panel["series"]
    width = 0.8 / max(len(series), 1)
    for j, s in enumerate(series):
        k = styles[_id(s)]
        xs = [g + (j - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [_nan(v) for v in s["y"]], width=width, color=COLORS[k % len(COLORS)], hatch=HATCHES[k % len(HATCHES)],
                      edgecolor="white", linewidth=0.3)
        handles.setdefault(_id(s), bars)
    ax.set_xticks(list(range(len(groups))))
    crowded = sum(len(g) + 2 for g in groups) * FONT_PT * CHAR_WIDTH / 72 > width_in * 0.85
    ax.set_xticklabels(groups, rotation=35 if crowded else 0, ha="right" if crowded else "center",
                       rotation_mode="anchor" if crowded else "default")
    values = [v for s in series for v in s["y"] if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max((hi - lo) * 0.3, 1.0)
        ax.set_ylim(max(lo - pad, 0.0), hi + pad)
