"""Drawing a weight-loss landscape (:mod:`advkd.report.landscape` computes it): one curve per
checkpoint, the mean over directions with its min..max band, labelled the way a paper names the
curves, at a paper's column or page width, with its JSON beside the figure."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_text
from advkd.report.landscape import NO_ATTACK, LandscapeResult, json_safe, landscape_json

if TYPE_CHECKING:
    from advkd.report.figures.style import FigureOptions

__all__ = ["summary_table", "legend_labels", "curve_ids", "landscape_panel", "plot_landscape"]


def _band(losses: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per grid point: mean, min and max over directions (finite values only; min..max stays
    positive, so the band reads right on the log axis a spiking landscape gets)."""
    mean, low, high = [], [], []
    for values in zip(*losses):
        finite = [v for v in values if math.isfinite(v)]
        mean.append(sum(finite) / len(finite) if finite else math.nan)
        low.append(min(finite) if finite else math.nan)
        high.append(max(finite) if finite else math.nan)
    return mean, low, high


def summary_table(results: list[LandscapeResult], out_png: str | Path):
    """The terminal summary: per checkpoint, the adversarial loss at the trained weights and the sharpness."""
    from rich.table import Table

    table = Table(title=f"weight-loss landscape -> {out_png}", title_justify="left")
    table.add_column("checkpoint")
    table.add_column("adv. loss at 0", justify="right")
    table.add_column("sharpness", justify="right")
    for r in results:
        mid = len(r.alphas) // 2
        table.add_row(r.label, f"{r.losses[0][mid]:.4f}", f"{r.sharpness:.4f}")
    return table


def _shared_arch(results: list[LandscapeResult]) -> str:
    """The network every curve shares ('' when they differ or there is one curve): the title says it once."""
    archs = {str(r.settings.get("arch") or "") for r in results}
    return archs.pop() if len(results) > 1 and len(archs) == 1 else ""


def legend_labels(results: list[LandscapeResult]) -> list[str]:
    """The curves' names as a paper writes them: ``AKD, ResNet-8`` (method, network drawn; the
    network left to the title when all curves share it); the epoch, then the file name, join
    only where two curves would share a name."""
    from advkd.report.figures.common import display_arch, display_method

    shared = _shared_arch(results)

    def base(r: LandscapeResult) -> str:
        s = r.settings
        parts = [display_method(s.get("method")), display_arch(s.get("arch")) if s.get("arch") and not shared else ""]
        return ", ".join(p for p in parts if p) or Path(r.checkpoint).stem

    labels = [base(r) for r in results]
    epochs = [f"{lab}, epoch {int(r.settings['epoch'])}" if r.settings.get("epoch") not in (None, "") else lab for lab, r in zip(labels, results)]
    labels = [e if labels.count(lab) > 1 else lab for lab, e in zip(labels, epochs)]
    return [f"{lab} ({Path(r.checkpoint).stem})" if labels.count(lab) > 1 else lab for lab, r in zip(labels, results)]


def curve_ids(checkpoints: list[str | Path]) -> list[tuple[str, str]]:
    """``(id, id)`` per checkpoint, in the order given: what ``--label`` may name before any work."""
    return [(str(c), str(c)) for c in checkpoints]


def _attack_name(attack: str) -> str:
    from advkd.report.layouts import ATTACKS

    return "natural loss" if attack == NO_ATTACK else ATTACKS.get(attack, attack)


def landscape_panel(results: list[LandscapeResult]) -> dict[str, Any]:
    """The figure's one panel: per checkpoint the mean over directions, with the min..max band."""
    series = []
    for r, label in zip(results, legend_labels(results)):
        mean, low, high = _band(r.losses)
        band = {"low": low, "high": high} if len(r.losses) > 1 else {}
        series.append({"id": r.checkpoint, "label": label, "x": r.alphas, "y": mean, **band})
    finite = [v for r in results for curve in r.losses for v in curve if math.isfinite(v)]
    s = results[0].settings
    return {
        "kind": "line", "title": "", "xlabel": "\u03b1 (filter-normalised direction)",
        "ylabel": "adversarial loss (CE)" if s.get("attack") != NO_ATTACK else "loss (CE)",
        # one spike would flatten every other curve on a linear axis
        "yscale": "log" if finite and min(finite) > 0 and max(finite) / min(finite) > 20 else "",
        "series": series,
    }


def plot_landscape(results: list[LandscapeResult], out_png: str | Path, *, title: str | None = None,
                   options: FigureOptions | None = None) -> dict[str, Any]:
    """One curve per checkpoint (mean over directions, band min..max over them) at a paper size;
    the figure (.png, .pdf or .svg) and its JSON beside it; returns the JSON's data. ``options``: a
    :class:`~advkd.report.figures.style.FigureOptions` (size, title, ``--label`` of the curves)."""
    if not results:
        raise AdvkdError("nothing to plot: no landscape results")
    from advkd.report.figures.common import display_arch, reduced_scale
    from advkd.report.figures.draw import apply_options, readable, render_panels, scale_line
    from advkd.report.figures.style import FigureOptions

    options = options or FigureOptions()
    out_png = Path(out_png)
    s = results[0].settings
    shared = _shared_arch(results)
    what = "natural loss" if s.get("attack") == NO_ATTACK else f"{_attack_name(str(s.get('attack')))}, \u03b5 = {s.get('eps')}"
    default = f"Weight-loss landscape{', ' + display_arch(shared) if shared else ''} ({what})"
    data = {"figure": "fig3", "title": title if title is not None else default, "panels": [landscape_panel(results)]}
    apply_options(data, options)
    warning = scale_line(reduced_scale([r.settings for r in results]))
    render_panels(data["panels"], out_png, title=data["title"], warning=warning, options=options)
    doc = landscape_json(results)
    doc.update(title=data["title"], size=options.size, warning=warning, labels=[c["label"] for c in data["panels"][0]["series"]],
               caption=f"Lines: mean over {s.get('directions')} filter-normalised directions; band: min to max over them; "
                       f"{s.get('n_examples')} test images. Sharpness (per checkpoint in results) = mean over directions "
                       "of (max loss on the grid - loss at alpha 0).")
    doc = json_safe(doc)
    atomic_write_text(out_png.with_suffix(".json"), json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
    readable(out_png.with_suffix(".json"))
    return doc
