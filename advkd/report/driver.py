"""``advkd report``: route an id to a table (text formats), a figure (png) or the id list."""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from advkd.core.console import print_wide
from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_text
from advkd.evaluation.records import RESULTS_FILE, read_records
from advkd.report import FIGURE_IDS, build_table, canonical_id, list_ids, lookup, render
from advkd.report.figures.draw import IMAGE_FORMATS
from advkd.report.figures.style import FigureOptions


def _list() -> RichTable:
    table = RichTable(title="advkd report ids", title_justify="left")
    table.add_column("id")
    table.add_column("what")
    for i, d in list_ids():
        table.add_row(i, d)
    return table


def run_report(
    table_id: str, *, fmt: str, out: Path | None, runs_dir: Path, run: Path | None = None, plan: bool = False, preset: str = "mini",
    only: list[str] | None = None, n_examples: int | None = None, data_dir: str | None = None, ranking: bool = False,
    estimate: bool = True, figure: FigureOptions | None = None, device: str = "auto", with_methods: list[str] | None = None,
) -> str | None:
    """Render ``table_id``; returns text for stdout, or None when it printed or wrote a file.

    ``ranking`` adds the per-column Kendall's tau of our method order against the paper's to the
    footer (and to the JSON as ``ranking``). ``figure``: size, title and curve labels of a figure
    (an AdvkdError for a table, where they mean nothing). ``with_methods``: rows for methods the
    paper does not have (:mod:`advkd.report.with_rows`), in the table and in its plan."""
    console = Console()
    if table_id == "list":
        ids = list_ids()
        if fmt == "json":
            return json.dumps([{"id": i, "what": d} for i, d in ids], indent=2)
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([("id", "what"), *ids])
            return buf.getvalue().rstrip("\n")
        if fmt == "markdown":
            return "\n".join(["| id | what |", "|---|---|", *(f"| {i} | {d} |" for i, d in ids)])
        print_wide(_list(), console)
        return None
    if plan:
        filters = {}
        for item in only or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise AdvkdError(f"--only {item!r} is not COLUMN=VALUE; e.g. --only student=resnet18")
            filters[key.strip()] = value.strip()
        text = plan_commands(table_id, preset=preset, runs_dir=runs_dir, only=filters, n_examples=n_examples,
                             fmt="sh" if fmt == "rich" else fmt, estimate=estimate, log=_stderr_line,
                             device=device, with_methods=with_methods)
        return _emit(text, out)
    tid = lookup(table_id)
    if tid.id in FIGURE_IDS or fmt in IMAGE_FORMATS:
        if tid.id not in FIGURE_IDS:
            raise AdvkdError(f"{tid.id} is a table; --format {fmt} is for figures ({', '.join(FIGURE_IDS)})")
        if out is None:
            raise AdvkdError(f"{tid.id} is a figure: pass --out FILE.png (or .pdf / .svg for vector figures)")
        if fmt in IMAGE_FORMATS and out.suffix.lstrip(".").lower() != fmt:
            raise AdvkdError(f"--format {fmt} writes a .{fmt} file; --out {out} has another suffix")
        from advkd.report.figures import render_figure

        data = render_figure(tid.id, runs_dir=runs_dir, out=out, run=run, options=figure)
        if data.get("notice"):
            console.print(data["notice"], highlight=False, markup=False, soft_wrap=True)
        console.print(f"wrote {out} and {out.with_suffix('.json')}", highlight=False, markup=False, soft_wrap=True)
        return None
    if figure is not None:
        raise AdvkdError(f"{tid.id} is a table; --size, --title and --label are for figures ({', '.join(FIGURE_IDS)})")
    csv_id = canonical_id(table_id)
    if csv_id == "bmtard-table1" and data_dir is not None:
        from advkd.report.measure_knowledge import ensure_knowledge_records

        try:  # computed from the newest finished bmtard run; without one the paper's numbers show alone
            ensure_knowledge_records(runs_dir, data_dir=data_dir)
        except AdvkdError as e:
            console.print(f"[yellow]{e}[/yellow]", highlight=False, soft_wrap=not console.is_terminal)  # piped: paths stay whole
    records = read_records(runs_dir / RESULTS_FILE)
    if with_methods and tid.is_figure:
        raise AdvkdError(f"{tid.id} is a figure; --with adds a row to a table")
    table = build_table(csv_id, records, with_methods=with_methods)
    if ranking:
        from advkd.report.ranking import ranking_footer, rankings

        found = rankings(table, records)
        table.footer += ranking_footer(table, records, found)
        table.ranking = [r.as_dict() for r in found]
    rendered = render(table, fmt)
    if fmt == "rich":
        if out is not None:
            raise AdvkdError("--out needs a text format: markdown, csv, json or latex")
        print_wide(rendered, console)
        return None
    return _emit(rendered, out)


def _emit(text: str, out: Path | None) -> str | None:
    if out is None:
        return text
    if out.is_dir():
        raise AdvkdError(f"--out {out} is a folder; give a file path such as {out / 'table.md'}")
    atomic_write_text(out, text)
    return None


def _stderr_line(line: str) -> None:
    """Progress that must not land in a plan piped into a shell."""
    print(line, file=sys.stderr, flush=True)


def plan_commands(table_id: str, *, preset: str, runs_dir: Path, only: dict[str, str] | None = None, n_examples: int | None = None,
                  fmt: str = "sh", estimate: bool = True, log: Callable[[str], None] | None = None, device: str = "auto",
                  with_methods: list[str] | None = None) -> str:
    """Shell lines (comments start with '#') that fill every empty cell of ``table_id``.

    ``only`` restricts the cells (CSV column -> value); ``n_examples`` is passed to the attacks.
    ``estimate``: price each command on ``device`` (as ``--device`` names it; :mod:`advkd.report.budget`;
    ``log`` gets the one-time calibration line). Slurm scripts carry no estimate: they run on other machines.
    The tables' plans are :mod:`advkd.report.plan`'s, fig2's :mod:`advkd.report.figure_plans`'.
    """
    from advkd.report.figure_plans import FIGURE_PLANS, FIGURE_SOURCES
    from advkd.report.plan import PLAN_FORMATS, plan_script, table_planner

    if n_examples is not None and n_examples < 0:
        raise AdvkdError(f"--n-examples must be >= 0 (0 = the whole test set), got {n_examples}")
    tid = lookup(table_id)
    if fmt not in PLAN_FORMATS:
        raise AdvkdError(f"--plan --format {fmt}: one of {', '.join(PLAN_FORMATS)} (sh: the commands, one per line)")
    if tid.id in FIGURE_PLANS:
        if with_methods:
            raise AdvkdError(f"{tid.id} is a figure; --with adds a row to a table")
        return FIGURE_PLANS[tid.id](preset=preset, runs_dir=runs_dir, only=only or {}, n_examples=n_examples, fmt=fmt,
                                    estimate=estimate, log=log, device=device)
    if tid.is_figure:
        raise AdvkdError(
            f"--plan covers the tables and fig2; {tid.id} draws from runs that other plans create "
            f"({FIGURE_SOURCES.get(tid.id, 'see advkd report list')})"
        )
    planner, notes = table_planner(table_id, preset=preset, runs_dir=runs_dir, only=only, n_examples=n_examples, with_methods=with_methods)
    return plan_script(planner, tid.id, preset, notes, fmt, estimate, log, device)
