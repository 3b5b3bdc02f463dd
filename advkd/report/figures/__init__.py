"""The report's figures: result records or run metrics -> a PNG and the JSON of what it shows.

This module is the entry point: the figure ids (:data:`FIGURES`) and :func:`render_figure`, which
dispatches to the builders and writes the result. The builders, with the sources they read, live in

- :mod:`advkd.report.figures.adaad` — ``fig2`` and ``fig3`` (AdaAD);
- :mod:`advkd.report.figures.bmtard` — ``bmtard-fig3`` and ``bmtard-fig4/5/6`` (B-MTARD);
- :mod:`advkd.report.figures.common` — the record helpers, constants and display names they share;
- :mod:`advkd.report.figures.weight_loss` — the drawing of a weight-loss landscape (``fig3``);
- :mod:`advkd.report.figures.draw` — the one drawing of panels, at a paper size
  (:mod:`advkd.report.figures.style`: ``--size``, ``--title``, ``--label``).

:func:`render_figure` writes ``out`` (.png, or vector .pdf / .svg; matplotlib Agg, no pyplot
state) and ``out.with_suffix(".json")`` atomically and returns the JSON's data. The data of every
figure but ``fig3`` is a list of panels, each ``{"kind": "line"|"bar", "title", "xlabel",
"ylabel", "series": [{"id", "label", "x", "y"}]}`` (bar panels have ``"groups"`` and series
without ``x``); missing values are ``null``. ``fig3`` re-renders a landscape file of
:mod:`advkd.report.landscape`. A ``"notice"`` in the data is a line for the user (``fig2`` drew
the paper's points only, and how to add ours).

Missing data raises :class:`~advkd.core.errors.AdvkdError` with the command that creates it.

A subpackage of ``advkd.report``: may import what ``advkd.report`` may (here: ``advkd.core``,
``advkd.evaluation.records``, and ``advkd.report.landscape`` for ``fig3``).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.report.figures.adaad import fig2_data, render_fig3
from advkd.report.figures.bmtard import bmtard_fig3_data, bmtard_run_dir, dynamics_data
from advkd.report.figures.common import default_landscape_json, read_results
from advkd.report.figures.draw import write_figure
from advkd.report.figures.style import FigureOptions
from advkd.report.layouts import lookup

__all__ = ["FIGURES", "FigureOptions", "default_landscape_json", "figure_ids", "render_figure"]

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


def figure_ids() -> list[str]:
    return list(FIGURES)


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


def render_figure(fig_id: str, *, runs_dir: str | Path, out: str | Path, run: str | Path | None = None,
                  options: FigureOptions | None = None) -> dict[str, Any]:
    """Render figure ``fig_id`` to ``out`` and ``out.with_suffix(".json")``; return the data.

    ``run``: for ``bmtard-fig4/5/6`` a B-MTARD run dir (or its ``metrics.jsonl``); for ``fig3`` a
    landscape JSON (or its PNG, or the folder holding ``landscape.json``). Ignored otherwise.
    ``options``: size, title and curve labels (default: one column, the figure's own words).
    """
    key = _figure_id(fig_id)
    runs_dir, out = Path(runs_dir), Path(out)
    options = options or FigureOptions()
    if key == "fig3":
        return render_fig3(runs_dir, out, run, options)
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "fig2": lambda: fig2_data(read_results(runs_dir)),
        "bmtard-fig3": lambda: bmtard_fig3_data(read_results(runs_dir)),
        "bmtard-fig4": lambda: dynamics_data("bmtard-fig4", bmtard_run_dir(runs_dir, run)),
        "bmtard-fig5": lambda: dynamics_data("bmtard-fig5", bmtard_run_dir(runs_dir, run)),
        "bmtard-fig6": lambda: dynamics_data("bmtard-fig6", bmtard_run_dir(runs_dir, run)),
    }
    data = builders[key]()
    data["figure"] = key
    write_figure(data, out, options)
    return data
