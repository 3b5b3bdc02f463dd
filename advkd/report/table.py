"""A paper table filled with our numbers: the data structure every renderer reads."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.report import layouts
from advkd.report.match import SHARED_FLAG, CellSpec, find, other_params, spec_for
from advkd.report.paper import PaperRow, table_rows
from advkd.report.with_rows import WITH_MARK

MISMATCH_MARK = "†"
MINI_MARK = "ᵐ"
SMALL_MARK = "ˢ"
CUSTOM_MARK = "ᶜ"
SHARED_MARK = "≡"
SHARED_NOTE = (
    "≡ filled by a run of a twin paper architecture, one this scale trains as the same stand-in network (e.g. "
    "WRN-34-10 and WRN-34-20 teachers, ResNet-18 and MobileNet-v2 students): the same numbers as that cell, not a "
    "separate result, so --ranking leaves these cells out."
)

MINI_WARNING = (
    "Scale mini: these numbers come from the mini preset (small stand-in networks for the paper's "
    "architectures, a training subset, a few epochs, fewer test points); they show that the pipeline works "
    "and are NOT comparable to the paper's numbers."
)
CUSTOM_WARNING = "Scale custom: some numbers come from runs with non-preset settings; compare them with care."
SMALL_WARNING = (
    "Scale small: these numbers come from the small preset (ResNet-8 students and ResNet-14 teachers for the paper's "
    "architectures, a few thousand training images, a few epochs, 1000 test points, AutoAttack on 100); compare the ORDER of "
    "methods with the paper's (--ranking), not the values (docs/scales.md)."
)
# Reduced scales, most reduced first: a cell mixing scales shows the first; each has a mark and a footer line.
FEW_EXAMPLES = 500  # below this many test images a cell says its n (binomial s.e. >= 2.2 points near 50 %)
SCALE_MARKS = {"mini": (MINI_MARK, MINI_WARNING), "small": (SMALL_MARK, SMALL_WARNING), "custom": (CUSTOM_MARK, CUSTOM_WARNING)}


@dataclass(frozen=True)
class Row:
    key: str
    label: str


@dataclass
class Block:
    key: str
    label: str
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Column:
    group: str
    group_label: str
    key: str
    label: str

    @property
    def header(self) -> str:
        return " · ".join(x for x in (self.group_label, self.label) if x)


@dataclass
class Cell:
    """One printed number with ours beside it.

    ``paper`` is the CSV text exactly as printed; ``ours``/``diff`` are floats or None; ``sources``
    are indices into the ``records`` list given to :func:`build_table` (= the line order of
    results.jsonl as ``read_records`` returns it); ``flags`` are short strings such as
    ``"w_robust mismatch"``, ``"mini"``, ``"newest of 3"``.
    """

    block: str
    row: str
    group: str
    column: str
    paper: str
    csv: PaperRow
    spec: CellSpec
    ours: float | None = None
    spread: float | None = None  # sample standard deviation over seeds (None: one seed)
    seeds: int = 0
    diff: float | None = None
    scale: str | None = None
    sources: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    n: int | None = None  # test images behind the number (the smallest of its records')

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.block, self.row, self.group, self.column

    @property
    def paper_value(self) -> float:
        """The published number; NaN for a row the paper does not have (``report --with``)."""
        return self.csv.number if self.csv.value else math.nan

    @property
    def ours_only(self) -> bool:
        """A cell of a ``--with`` row: a method the paper does not have, our number alone."""
        return not self.csv.value

    @property
    def marker(self) -> str:
        return MISMATCH_MARK if self.csv.w_robust_mismatch else ""

    @property
    def shared(self) -> bool:
        """Filled from a run trained for a twin architecture (see :data:`SHARED_NOTE`)."""
        return any(f.startswith(SHARED_FLAG) for f in self.flags)

    @property
    def scale_mark(self) -> str:
        """The scale's mark, then :data:`SHARED_MARK` for a cell filled by a twin's run."""
        return SCALE_MARKS.get(self.scale or "", ("", ""))[0] + (SHARED_MARK if self.shared else "")

    @property
    def n_mark(self) -> str:
        """`` n=8`` beside a number that rests on fewer than :data:`FEW_EXAMPLES` test images."""
        return f" n={self.n}" if self.n is not None and self.n < FEW_EXAMPLES else ""

    @property
    def decimals(self) -> int:
        return max(4 if self.csv.metric == "knowledge_scale" else 2, self.csv.decimals)

    def fmt(self, x: float) -> str:
        return f"{x:.{self.decimals}f}"

    @property
    def ours_text(self) -> str:
        """Our number as printed: ``24.30``, or ``24.30±0.85`` for a mean over seeds (± sample s.d.)."""
        if self.ours is None:
            return ""
        return self.fmt(self.ours) + ("" if self.spread is None else f"±{self.spread:.{min(self.decimals, 2)}f}")

    def fmt_diff(self) -> str:
        return "" if self.diff is None else f"{self.diff:+.{self.decimals}f}"

    def closeness(self) -> str:
        """``good`` / ``fair`` / ``far`` by |ours - paper| (1 / 3 points; 0.05 / 0.15 for knowledge scale)."""
        if self.diff is None:
            return ""
        near, fair = (0.05, 0.15) if self.csv.metric == "knowledge_scale" else (1.0, 3.0)
        d = abs(self.diff)
        return "good" if d <= near else "fair" if d <= fair else "far"

    def as_dict(self) -> dict[str, Any]:
        return {
            "block": self.block, "row": self.row, "group": self.group, "column": self.column,
            "paper": self.paper, "paper_value": None if self.ours_only else self.paper_value, "marker": self.marker,
            "ours": self.ours, "spread": self.spread, "seeds": self.seeds, "diff": self.diff, "scale": self.scale, "sources": self.sources,
            "runs": self.runs, "flags": self.flags, "n": self.n, "csv": self.csv.as_dict(), "csv_line": None if self.ours_only else self.csv.index + 2,
        }


@dataclass
class Table:
    id: str
    csv_id: str
    paper: str
    title: str
    description: str
    block_name: str
    row_name: str
    blocks: list[Block]
    columns: list[Column]
    cells: dict[tuple[str, str, str, str], Cell]
    notes: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # summary of each record used
    n_records_read: int = 0
    scales: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    newest_of: list[tuple[str, int]] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)  # per-column agreement with the paper (--ranking)
    with_templates: dict[str, str] = field(default_factory=dict)  # --with methods -> the built-in row each copies

    @property
    def column_groups(self) -> list[tuple[str, str, list[Column]]]:
        out: list[tuple[str, str, list[Column]]] = []
        for c in self.columns:
            if not out or out[-1][0] != c.group:
                out.append((c.group, c.group_label, []))
            out[-1][2].append(c)
        return out

    @property
    def has_blocks(self) -> bool:
        return any(b.label for b in self.blocks)

    def cell(self, block: str, row: str, group: str, column: str) -> Cell | None:
        return self.cells.get((block, row, group, column))

    def iter_cells(self) -> Iterator[Cell]:
        """Cells in reading order (block, row, then column), which is the CSV's order."""
        for b in self.blocks:
            for r in b.rows:
                for c in self.columns:
                    cell = self.cells.get((b.key, r.key, c.group, c.key))
                    if cell is not None:
                        yield cell

    def filled(self) -> list[Cell]:
        return [c for c in self.iter_cells() if c.ours is not None]

    def label_of(self, cell: Cell) -> str:
        block = next(b for b in self.blocks if b.key == cell.block)
        row = next(r for r in block.rows if r.key == cell.row)
        col = next(c for c in self.columns if (c.group, c.key) == (cell.group, cell.column))
        return " / ".join(x for x in (block.label, row.label, col.header) if x)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "csv_id": self.csv_id, "paper": self.paper, "title": self.title,
            "description": self.description,
            "column_groups": [
                {"key": g, "label": gl, "columns": [{"key": c.key, "label": c.label} for c in cols]}
                for g, gl, cols in self.column_groups
            ],
            "blocks": [{"key": b.key, "label": b.label, "rows": [{"key": r.key, "label": r.label} for r in b.rows]} for b in self.blocks],
            "cells": [c.as_dict() for c in self.iter_cells()],
            "scales": self.scales, "runs": self.runs, "n_records_used": len(self.records),
            "n_records_read": self.n_records_read,
            "records": {str(i): r for i, r in sorted(self.records.items())},
            "newest_of": [{"cell": label, "n": n} for label, n in self.newest_of],
            "notes": self.notes, "footer": self.footer, "footnotes": self.footnotes, "ranking": self.ranking,
        }


def run_name(rec: dict[str, Any]) -> str:
    if rec.get("run"):
        return str(rec["run"])
    ckpt = rec.get("checkpoint")
    return Path(str(ckpt)).parent.name if ckpt else "?"


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("run", "checkpoint", "sha256", "attack", "kind", "accuracy", "value", "scale", "preset", "epoch", "time", "n_examples")
    return {k: rec.get(k) for k in keys if rec.get(k) is not None}


def build_table(table_id: str, records: list[dict[str, Any]] | None = None, with_methods: list[str] | None = None) -> Table:
    """Table ``table_id`` (user id or CSV id) in the paper's layout, cells filled from ``records``.

    ``with_methods``: methods the paper does not have (a built-in, a plugin's name or a
    ``module:Class``), each given a row of our numbers beside the rest (:mod:`advkd.report.with_rows`).

    ``records`` are result records as :func:`advkd.evaluation.records.read_records` returns them (plus, for
    B-MTARD Table I, knowledge-scale records from :func:`advkd.report.knowledge_records`).
    Raises :class:`AdvkdError` for figures, ``bmtard-table9`` and unknown ids.
    """
    tid = layouts.lookup(table_id)
    if tid.is_figure:
        raise AdvkdError(f"{tid.id} is a figure; use --format png")
    records = list(records or [])
    rows = table_rows(tid.csv_id)
    if not rows:
        raise AdvkdError(f"{tid.id}: no rows for {tid.csv_id} in the packaged results.csv")
    templates: dict[str, str] = {}
    if with_methods:
        from advkd.report.with_rows import with_rows

        rows, templates = with_rows(rows, list(with_methods), tid.id)

    blocks: dict[str, Block] = {}
    columns: dict[tuple[str, str], Column] = {}
    cells: dict[tuple[str, str, str, str], Cell] = {}
    for prow in rows:
        bk, bl = tid.block(prow)
        rk, rl = tid.row(prow)
        if not prow.value and prow.method in templates:  # a --with row: marked, never mistaken for a published one
            rl = f"{rl}{WITH_MARK}"
        gk, gl = tid.group(prow)
        ck, cl = tid.column(prow)
        block = blocks.setdefault(bk, Block(bk, bl))
        if all(r.key != rk for r in block.rows):
            block.rows.append(Row(rk, rl))
        columns.setdefault((gk, ck), Column(gk, gl, ck, cl))
        key = (bk, rk, gk, ck)
        if key in cells:
            raise AdvkdError(f"layout of {tid.id}: results.csv lines {cells[key].csv.index + 2} and {prow.index + 2} fall into one cell")
        cells[key] = Cell(bk, rk, gk, ck, paper=prow.value, csv=prow, spec=spec_for(tid, prow))

    table = Table(
        id=tid.id, csv_id=tid.csv_id, paper=tid.paper, title=tid.title or tid.description, description=tid.description,
        block_name=layouts.AXIS_NAMES.get(tid.block, ""), row_name=layouts.AXIS_NAMES.get(tid.row, ""),
        blocks=list(blocks.values()), columns=list(columns.values()), cells=cells, notes=list(tid.notes),
        n_records_read=len(records),
    )
    table.with_templates = templates
    _fill(table, records)
    _footer(table, tid)
    if templates:
        table.footnotes.append(f"{WITH_MARK} " + "; ".join(f"{m}: not in the paper (report --with), our numbers only, under the protocol of the "
                                                        f"{t} row (same teachers, preset, seeds and attacks)" for m, t in templates.items()) + ".")
    return table


def _fill(table: Table, records: list[dict[str, Any]]) -> None:
    for cell in table.iter_cells():
        if cell.csv.w_robust_mismatch:
            cell.flags.append("w_robust mismatch")
        if not records:
            continue
        hit = find(cell.spec, records)
        cell.flags += hit["flags"]
        if hit["ours"] is None:
            continue
        cell.ours, cell.spread, cell.seeds = hit["ours"], hit["spread"], hit["seeds"]
        cell.diff = None if cell.ours_only else cell.ours - cell.paper_value
        cell.sources = hit["sources"]
        used = [records[i] for i in cell.sources]
        cell.runs = list(dict.fromkeys(run_name(r) for r in used))
        sizes = [r["n_examples"] for r in used if isinstance(r.get("n_examples"), int)]
        cell.n = min(sizes) if sizes else None
        scales = {str(r.get("scale") or "unknown") for r in used}
        cell.scale = next((sc for sc in SCALE_MARKS if sc in scales), sorted(scales)[0])
        if cell.scale in ("mini", "small"):
            cell.flags.append(cell.scale)
        if hit["n_candidates"] > 1:
            cell.flags.append(f"newest of {hit['n_candidates']}")
            table.newest_of.append((table.label_of(cell), hit["n_candidates"]))
        extra = other_params(cell.spec, records[cell.sources[-1]])
        if extra:
            cell.flags.append("params " + ", ".join(f"{k}={v}" for k, v in extra.items()))
        if any(r.get("sanity_flags") for r in used):
            cell.flags.append("sanity flags")
        for i in cell.sources:
            table.records.setdefault(i, _summary(records[i]))


def _footer(table: Table, tid: layouts.TableId) -> None:
    filled = table.filled()
    used = sorted(table.records)
    table.scales = sorted({c.scale for c in filled if c.scale})
    table.runs = sorted({c for cell in filled for c in cell.runs})
    lines = ["Cells: ours / paper (ours - paper). A lone number is the paper's: no result of ours matched that cell."]
    if filled:
        scale_counts = ", ".join(f"{s} ({_n(sum(c.scale == s for c in filled), 'cell')})" for s in table.scales)
        lines.append(
            f"Our numbers: {len(filled)} of {_n(len(table.cells), 'cell')}, from {_n(len(used), 'result record')} "
            f"(of {table.n_records_read} read); scale: {scale_counts}; {_n(len(table.runs), 'run')}: {', '.join(table.runs)}."
        )
    else:
        lines.append(
            f"No result record matched this table ({_n(table.n_records_read, 'record')} read): only the paper's numbers are shown. "
            f"To fill it: {tid.hint}."
        )
    for scale, (mark, warning) in SCALE_MARKS.items():
        if scale in table.scales:
            lines.append(f"{mark} {warning}")
    sizes = _sample_sizes(table)
    if sizes:
        lines.append(f"Test images per number: {sizes}.")
    if any(c.n_mark for c in filled):
        lines.append(f"n=N beside a number: it rests on fewer than {FEW_EXAMPLES} test images (a standard error of 2 points or more); "
                     "attack more images (--n-examples, --attack-examples) before reading it as a result.")
    shared = [c for c in filled if c.shared]
    if shared:
        lines.append(f"{SHARED_NOTE} ({_n(len(shared), 'cell')})")
    seeded = [c for c in filled if c.seeds > 1]
    if seeded:
        lines.append(f"a±b: mean ± sample standard deviation over seeds ({_n(len(seeded), 'cell')}, {'/'.join(sorted({str(c.seeds) for c in seeded}))} seeds each).")
    if table.newest_of:
        shown = "; ".join(f"{label} (newest of {n})" for label, n in table.newest_of[:5])
        more = f"; and {len(table.newest_of) - 5} more" if len(table.newest_of) > 5 else ""
        lines.append(f"{_n(len(table.newest_of), 'cell')} matched several records and show the newest: {shown}{more}.")
    if any(c.spec.metric == "w_robust" for c in table.cells.values()):
        lines.append("W-Robust = (clean + robust) / 2, ours computed from the clean and attack records of the same checkpoint.")
    table.footer = lines
    table.footnotes = [
        f"{MISMATCH_MARK} {table.label_of(c)}: kept as printed; {_mismatch_text(c.csv.note)}"
        for c in table.iter_cells() if c.csv.w_robust_mismatch
    ]


def _sample_sizes(table: Table) -> str:
    """``Clean 1000, AA 100``: the test images behind each column's numbers (a range where they differ)."""
    parts = []
    for col in table.columns:
        ns = sorted({c.n for c in table.filled() if (c.group, c.column) == (col.group, col.key) and c.n is not None})
        if ns:
            parts.append(f"{col.header} {ns[0] if len(ns) == 1 else f'{ns[0]}-{ns[-1]}'}")
    return ", ".join(dict.fromkeys(parts))


def _mismatch_text(note: str) -> str:
    return next(part.strip() for part in note.split(";") if "w_robust mismatch" in part)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
