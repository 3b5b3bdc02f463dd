"""Renderers of a :class:`~advkd.report.table.Table`: rich, markdown, csv, json, latex.

- ``rich`` returns a Rich renderable (a :class:`rich.console.Group`: the table, then the footer);
  print it with ``Console().print(...)``. Filled cells show our number (bold, coloured by how close
  it is to the paper: green within 1 point, yellow within 3, red beyond) over the paper's number
  and the signed difference; cells with no result show the paper's number dimmed.
- ``markdown`` is GitHub-flavoured: one table (block label on the first row of each block, column
  header "group · column"), then the footer as a bullet list and the footnotes.
- ``csv`` is long/tidy: one line per printed number with the paper's text, ours, the difference,
  scale, record indices, runs and flags (no footer: every line carries its scale and runs).
- ``json`` is :meth:`Table.as_dict`.
- ``latex`` is a booktabs ``tabular`` in a ``table`` float (needs ``booktabs`` and ``xcolor``).

Every format writes the paper's number exactly as results.csv has it ("0", "55.90"), followed by
``†`` where the paper's printed W-Robust is not (clean + robust) / 2.
"""
from __future__ import annotations

import csv
import io
from typing import Any

from advkd.core import jsonsafe
from advkd.core.errors import AdvkdError
from advkd.report.table import CUSTOM_MARK, MINI_MARK, MISMATCH_MARK, SCALE_MARKS, SHARED_MARK, SMALL_MARK, Cell, Table

FORMATS = ("rich", "markdown", "csv", "json", "latex")

COLOURS = {"good": "green", "fair": "yellow", "far": "red"}


def cell_text(cell: Cell) -> str:
    """Plain text of one cell: ``paper`` alone, or ``ours[mark] / paper (diff)``."""
    paper = cell.paper + cell.marker
    if cell.ours_only:
        return f"{cell.ours_text}{cell.scale_mark}{cell.n_mark}" if cell.ours is not None else "–"
    if cell.ours is None:
        return paper
    return f"{cell.ours_text}{cell.scale_mark}{cell.n_mark} / {paper} ({cell.fmt_diff()})"


def render(table: Table, fmt: str) -> Any:
    """Render ``table`` as ``fmt`` (rich | markdown | csv | json | latex).

    Returns a string, except for ``rich``: a Rich renderable to pass to ``Console.print``.
    """
    try:
        fn = _RENDERERS[fmt]
    except KeyError:
        raise AdvkdError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}") from None
    return fn(table)


# ---------------------------------------------------------------------------------------------- rich


def _rich(table: Table):
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(show_lines=False)
    if table.has_blocks:
        out.add_column(table.block_name or "", style="bold")
    out.add_column(table.row_name or "")
    for col in table.columns:
        out.add_column(col.group_label + ("\n" if col.group_label else "") + col.label, justify="right")
    for bi, block in enumerate(table.blocks):
        if bi:
            out.add_section()
        for ri, row in enumerate(block.rows):
            cells: list[Any] = []
            if table.has_blocks:
                cells.append(block.label if ri == 0 else "")
            cells.append(row.label)
            for col in table.columns:
                cell = table.cell(block.key, row.key, col.group, col.key)
                cells.append(_rich_cell(cell, Text))
            out.add_row(*cells)
    marks = (*(mark for mark, _ in SCALE_MARKS.values()), SHARED_MARK)
    footer = [Text(line, style="yellow" if line.startswith(marks) else "dim") for line in table.footer]
    footer += [Text(line, style="dim") for line in table.notes + table.footnotes]
    return Group(Text(table.title, style="bold"), out, *footer)


def _rich_cell(cell: Cell | None, Text) -> Any:
    if cell is None:
        return ""
    paper = cell.paper + cell.marker
    if cell.ours_only:
        return Text(cell_text(cell), style="bold" if cell.ours is not None else "dim")
    if cell.ours is None:
        return Text(paper, style="dim")
    colour = COLOURS.get(cell.closeness(), "")
    text = Text()
    text.append(cell.ours_text, style=f"bold {colour}".strip())
    if cell.scale_mark:
        text.append(cell.scale_mark, style="yellow")
    if cell.n_mark:
        text.append(cell.n_mark, style="bold yellow")
    text.append("\n")
    text.append(paper, style="dim")
    text.append(" ")
    text.append(f"({cell.fmt_diff()})", style=colour)
    return text


# ---------------------------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(table: Table) -> str:
    head = ([table.block_name or " "] if table.has_blocks else []) + [table.row_name or " "]
    head += [f"{c.group_label}<br>{c.label}" if c.group_label else c.label for c in table.columns]
    align = ["---"] * (len(head) - len(table.columns)) + ["---:"] * len(table.columns)
    lines = [f"### {_md_escape(table.title)}", "", "| " + " | ".join(map(_md_escape, head)) + " |", "|" + "|".join(align) + "|"]
    for block in table.blocks:
        for ri, row in enumerate(block.rows):
            cells = []
            if table.has_blocks:
                cells.append(f"**{block.label}**" if ri == 0 else "")
            cells.append(row.label)
            for col in table.columns:
                cell = table.cell(block.key, row.key, col.group, col.key)
                cells.append("" if cell is None else _md_cell(cell))
            lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in table.footer + table.notes]
    if table.footnotes:
        lines.append("")
        lines += [f"{line}  " for line in table.footnotes]
    return "\n".join(lines) + "\n"


def _md_cell(cell: Cell) -> str:
    if cell.ours_only:
        return f"**{cell.ours_text}**{cell.scale_mark}{cell.n_mark}" if cell.ours is not None else "–"
    if cell.ours is None:
        return cell.paper + cell.marker
    return f"**{cell.ours_text}**{cell.scale_mark}{cell.n_mark} / {cell.paper}{cell.marker} ({cell.fmt_diff()})"


# ---------------------------------------------------------------------------------------------- csv

CSV_COLUMNS = (
    "table", "block", "row", "column_group", "column", "dataset", "student", "teacher", "clean_teacher",
    "robust_teacher", "method", "attack", "metric", "paper", "marker", "ours", "ours_sd", "seeds", "diff", "scale", "n", "sources",
    "runs", "flags", "csv_line",
)


def _num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 6))


def _csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    labels = {b.key: b.label for b in table.blocks}
    rows = {(b.key, r.key): r.label for b in table.blocks for r in b.rows}
    cols = {(c.group, c.key): c for c in table.columns}
    for cell in table.iter_cells():
        p = cell.csv
        col = cols[(cell.group, cell.column)]
        w.writerow([
            table.id, labels[cell.block], rows[(cell.block, cell.row)], col.group_label, col.label, p.dataset,
            p.student, p.teacher, p.clean_teacher, p.robust_teacher, p.method, p.attack, p.metric, cell.paper,
            cell.marker, _num(cell.ours), _num(cell.spread), cell.seeds or "", _num(cell.diff), cell.scale or "", cell.n or "", " ".join(map(str, cell.sources)),
            " ".join(cell.runs), "; ".join(cell.flags), p.index + 2,
        ])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- json


def _json(table: Table) -> str:
    return jsonsafe.dumps(table.as_dict(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------- latex

_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "τ": r"$\tau$", "β": r"$\beta$", "∞": r"$\infty$",
    "·": r"$\cdot$", "±": r"$\pm$", "−": "-", "→": r"$\to$", MISMATCH_MARK: r"\textsuperscript{\dag}",
    MINI_MARK: r"\textsuperscript{m}", SMALL_MARK: r"\textsuperscript{s}", CUSTOM_MARK: r"\textsuperscript{c}",
    SHARED_MARK: r"\textsuperscript{$\equiv$}",
}
_TEX_COLOURS = {"good": "green!50!black", "fair": "orange", "far": "red"}


def tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _latex_cell(cell: Cell | None) -> str:
    if cell is None:
        return ""
    paper = tex(cell.paper + cell.marker)
    if cell.ours_only:
        return rf"\textbf{{{tex(cell.ours_text)}}}{tex(cell.scale_mark + cell.n_mark)}" if cell.ours is not None else "--"
    if cell.ours is None:
        return rf"\textcolor{{gray}}{{{paper}}}"
    colour = _TEX_COLOURS.get(cell.closeness(), "black")
    return rf"\textbf{{{tex(cell.ours_text)}}}{tex(cell.scale_mark + cell.n_mark)} / {paper} \textcolor{{{colour}}}{{({cell.fmt_diff()})}}"


def _latex(table: Table) -> str:
    lead = 2 if table.has_blocks else 1
    spec = "l" * lead + "".join("|" + "r" * len(cols) if gi else "r" * len(cols) for gi, (_, _, cols) in enumerate(table.column_groups))
    lines = [
        f"% advkd report {table.id} (needs \\usepackage{{booktabs}} and \\usepackage{{xcolor}})",
        r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(table.title)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
    ]
    groups = table.column_groups
    if any(gl for _, gl, _ in groups):
        parts = [""] * lead + [rf"\multicolumn{{{len(cols)}}}{{c}}{{{tex(gl)}}}" for _, gl, cols in groups]
        lines.append(" & ".join(parts) + r" \\")
        rules, start = [], lead + 1
        for _, _, cols in groups:
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        lines.append(" ".join(rules))
    head = ([tex(table.block_name)] if table.has_blocks else []) + [tex(table.row_name)] + [tex(c.label) for c in table.columns]
    lines += [" & ".join(head) + r" \\", r"\midrule"]
    for bi, block in enumerate(table.blocks):
        if bi:
            lines.append(r"\midrule")
        for ri, row in enumerate(block.rows):
            cells = ([tex(block.label) if ri == 0 else ""] if table.has_blocks else []) + [tex(row.label)]
            cells += [_latex_cell(table.cell(block.key, row.key, c.group, c.key)) for c in table.columns]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    lines += [tex(line) + r"\par" for line in table.footer + table.notes + table.footnotes]
    lines += ["}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_RENDERERS = {"rich": _rich, "markdown": _markdown, "csv": _csv, "json": _json, "latex": _latex}
