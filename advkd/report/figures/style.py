"""Paper-ready figures: the sizes a figure is drawn at, the fonts that keep it readable there, and
the user's ``--size`` / ``--title`` / ``--label`` choices.

A paper figure is printed at the width of one column or of the whole page and never rescaled, so
the canvas is made at that width (:data:`SIZES`) and every text at 8-9 pt (:func:`paper_rc`):
what the reader sees is what matplotlib measured, no overlaps appear after scaling. Fonts are
embedded as TrueType in PDF and kept as text in SVG (:data:`PUBLISHER_FONTS`): publishers' PDF
checkers (IEEE PDF eXpress among them) reject matplotlib's default Type 3 fonts, and text in an
SVG stays editable.

Curves are named on the command line by ``--label CURVE=TEXT``: ``CURVE`` is a curve's position
in the legend (1, 2, ...) or its id (``id`` in the figure's JSON: a teacher architecture, a
variant, a metrics key, a checkpoint path). :func:`resolve_labels` turns those into
``{curve id: text}`` and refuses, on one line that lists the curves, a label naming no curve.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from advkd.core.errors import AdvkdError

__all__ = [
    "DEFAULT_SIZE", "FONT_PT", "PUBLISHER_FONTS", "SIZES", "TITLE_PT", "FigureOptions", "FigureSize",
    "paper_rc", "parse_label", "resolve_labels", "size_names",
]


@dataclass(frozen=True)
class FigureSize:
    """A canvas width (inches, as printed) and the height of one row of panels."""

    width: float
    panel_height: float  # a row of two or more panels
    single_height: float  # a figure of one panel: a less flat plot
    max_cols: int  # panels side by side before the next row
    what: str

    def row_height(self, cols: int) -> float:
        return self.single_height if cols == 1 else self.panel_height


SIZES: dict[str, FigureSize] = {
    # IEEE two-column: 3.5 in column, 7.16 in text width; CVPR: 3.25 in column, 6.875 in text width
    "column": FigureSize(3.5, 1.9, 2.1, 2, "one column of a two-column IEEE / CVPR page, 3.5 in wide"),
    "page": FigureSize(7.16, 2.3, 2.8, 3, "the full text width of that page, 7.16 in"),
}
DEFAULT_SIZE = "column"

FONT_PT = 8  # ticks, axis labels, legend, panel titles
TITLE_PT = 9  # the figure's title

# TrueType (Type 42) fonts embedded in PDF/PS, text kept as text in SVG
PUBLISHER_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}


def size_names() -> list[str]:
    return list(SIZES)


def paper_rc() -> dict[str, object]:
    """matplotlib settings for drawing *and* saving a figure at its printed size."""
    return {
        **PUBLISHER_FONTS,
        "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs on every machine
        "font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT,
        "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT, "figure.titlesize": TITLE_PT,
        "axes.titlepad": 3.0, "axes.labelpad": 2.0, "axes.linewidth": 0.6, "grid.linewidth": 0.3,
        "xtick.major.size": 2.5, "ytick.major.size": 2.5, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
        "xtick.major.pad": 2.0, "ytick.major.pad": 2.0, "lines.linewidth": 1.1, "lines.markersize": 3.5,
        "legend.frameon": False, "legend.handlelength": 1.8, "legend.columnspacing": 1.2, "legend.borderpad": 0.2,
        "legend.handletextpad": 0.5, "svg.hashsalt": "advkd",  # stable ids: the same figure gives the same SVG
    }


@dataclass(frozen=True)
class FigureOptions:
    """What the user asked of a figure: ``size`` (a :data:`SIZES` key), ``title`` (None: the
    figure's own; "": none, the caption says it) and ``labels`` (``CURVE=TEXT`` items)."""

    size: str = DEFAULT_SIZE
    title: str | None = None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise AdvkdError(f"--size {self.size!r}: choose one of {', '.join(SIZES)}")
        object.__setattr__(self, "labels", tuple(self.labels))
        for spec in self.labels:
            parse_label(spec)  # syntax before any work

    @property
    def canvas(self) -> FigureSize:
        return SIZES[self.size]


def parse_label(spec: str) -> tuple[str, str]:
    """``"CURVE=TEXT"`` -> ``(CURVE, TEXT)``; the first ``=`` splits, so TEXT may hold more."""
    key, sep, text = str(spec).partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key or not text:
        raise AdvkdError(f"--label {spec!r} is not CURVE=TEXT; e.g. --label 1='AdaAD, ResNet-18' "
                         "(CURVE: the curve's position in the legend, or its id)")
    return key, text


def resolve_labels(curves: Sequence[tuple[str, str]], specs: Iterable[str]) -> dict[str, str]:
    """``{curve id: new label}`` for ``specs`` over ``curves`` (``(id, label)`` in legend order).

    A key that is neither a position 1..n nor an id (ids first, case-insensitive), or a curve
    labelled twice, is an AdvkdError naming every curve."""
    ids = [c for c, _ in curves]
    out: dict[str, str] = {}
    for spec in specs:
        key, text = parse_label(spec)
        match = [c for c in ids if c == key] or [c for c in ids if c.lower() == key.lower()]
        if not match and key.isdigit() and 1 <= int(key) <= len(ids):
            match = [ids[int(key) - 1]]
        if not match:
            listing = "; ".join(f"{i} = {c}" + (f" {lab!r}" if lab != c else "") for i, (c, lab) in enumerate(curves, 1))
            raise AdvkdError(f"--label {key}=...: the figure has no curve {key}; its curves are {listing or 'none'}")
        if match[0] in out:
            raise AdvkdError(f"--label: curve {match[0]} is labelled twice")
        out[match[0]] = text
    return out
