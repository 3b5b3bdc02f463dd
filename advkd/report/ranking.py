"""How well our ordering of methods agrees with the paper's, column by column.

At reduced scale absolute numbers are far from the paper's; what a reproduction can still show
is the paper's *ordering*. For every (block, column) of a table with at least two rows filled,
Kendall's tau-b between the paper's values and ours over those rows, and the pairs of rows whose
order flips (paper says a > b, we say a < b). Ties count as neither agreement nor flip. A cell
filled by a twin architecture's run (``Cell.shared``) is not a result of its own and is left out,
and so is a column that only repeats another block's numbers: no result is ranked twice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from advkd.report.resolve import PairVerdict, compare_scores, seed_scores
from advkd.report.table import Table


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences; NaN when either has no untied pair."""
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau needs sequences of one length, got {len(xs)} and {len(ys)}")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(xs)), 2):
        dx, dy = _sign(xs[i] - xs[j]), _sign(ys[i] - ys[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


@dataclass
class ColumnRanking:
    """The agreement of one column of one block: tau over ``rows`` and the flipped pairs."""

    block: str
    column: str  # the column's printed header
    rows: list[str]  # row labels, in table order
    tau: float
    flips: list[tuple[str, str]] = field(default_factory=list)  # (paper's higher row, paper's lower row)
    pairs: list[PairVerdict] = field(default_factory=list)  # every pair of rows in our order, tested (records given)

    def line(self) -> str:
        where = " · ".join(x for x in (self.block, self.column) if x)
        tau = "n/a (ties)" if math.isnan(self.tau) else f"{self.tau:+.2f}"
        flips = "; flipped: " + ", ".join(f"{a} > {b}" for a, b in self.flips) if self.flips else "; no pair flipped"
        return f"{where}: tau {tau} over {len(self.rows)} rows{flips} (as the paper orders them)"

    def resolution_line(self) -> str:
        """Which of our pairwise orders the data resolve (a 95 % paired-bootstrap interval that excludes 0)."""
        where = " · ".join(x for x in (self.block, self.column) if x)
        done = [p.text() for p in self.pairs if p.resolved]
        open_ = [f"{p.higher} ~ {p.lower}" for p in self.pairs if not p.resolved]
        said = f"resolved {len(done)} of {len(self.pairs)}" + (": " + ", ".join(done) if done else "")
        return f"  {where}: {said}" + (f"; within the noise: {', '.join(open_)}" if open_ else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "block": self.block, "column": self.column, "rows": self.rows,
            "tau": None if math.isnan(self.tau) else self.tau, "flips": [list(p) for p in self.flips],
            "pairs": [p.as_dict() for p in self.pairs],
        }


def rankings(table: Table, records: list[dict[str, Any]] | None = None) -> list[ColumnRanking]:
    """One :class:`ColumnRanking` per (block, column) with at least two rows that have our own number;
    with the table's ``records``, every pair of its rows is also tested (:mod:`advkd.report.resolve`).

    A column whose numbers all appear again in a column of the same name elsewhere (the teacher-free
    rows a table repeats under every teacher) is left out, so no result is ranked twice."""
    found: list[tuple[ColumnRanking, str, frozenset]] = []
    for block in table.blocks:
        for col in table.columns:
            cells = [
                (row.label, cell) for row in block.rows
                if (cell := table.cell(block.key, row.key, col.group, col.key)) is not None and cell.ours is not None and not cell.shared
            ]
            filled = [(label, cell.paper_value, cell.ours, tuple(cell.sources)) for label, cell in cells if not cell.ours_only]
            if len(filled) < 2:
                continue
            labels = [label for label, _, _, _ in filled]
            paper = [p for _, p, _, _ in filled]
            ours = [o for _, _, o, _ in filled]
            flips = [
                (labels[i], labels[j]) if paper[i] > paper[j] else (labels[j], labels[i])
                for i, j in combinations(range(len(filled)), 2)
                if _sign(paper[i] - paper[j]) * _sign(ours[i] - ours[j]) < 0
            ]
            sources = frozenset((label, src) for label, _, _, src in filled)
            ranked = ColumnRanking(block.label, col.header, labels, kendall_tau(paper, ours), flips)
            if records is not None:
                ordered = [(label, seed_scores(cell, records)) for label, cell in sorted(cells, key=lambda lc: -lc[1].ours)]
                ranked.pairs = [compare_scores(ordered[i], ordered[j]) for i, j in combinations(range(len(ordered)), 2)]
            found.append((ranked, col.key, sources))
    return [r for i, (r, col, src) in enumerate(found)
            if not any(c == col and (src < s or (src == s and j < i)) for j, (_, c, s) in enumerate(found) if j != i)]


def ranking_footer(table: Table, records: list[dict[str, Any]] | None = None, found: list[ColumnRanking] | None = None) -> list[str]:
    """Footer lines: a heading line, then one line per column ranking (or why there is none); with
    ``records``, then which of our pairwise orders the data resolve, column by column. ``found``:
    :func:`rankings` of the same table and records, when the caller has them already."""
    found = rankings(table, records) if found is None else found
    if not found:
        return ["Ranking vs the paper: needs at least two filled rows in one column; none yet."]
    taus = [r.tau for r in found if not math.isnan(r.tau)]
    mean = f"; mean tau {sum(taus) / len(taus):+.2f}" if taus else ""
    left_out = sum(c.shared for c in table.filled())
    also = f"; {left_out} cells filled by a twin's run (≡) left out" if left_out else ""
    head = f"Ranking vs the paper (Kendall's tau-b of our order against the paper's, per column, over the rows we filled{also}{mean}):"
    lines = [head] + [r.line() for r in found]
    if records is not None and any(r.pairs for r in found):
        lines.append("Our orders the data resolve (A > B: mean accuracy difference in points [95 % interval], paired on shared "
                     "seeds, bootstrap over seeds and test images; docs/reports.md, 'Orderings and their uncertainty'):")
        lines += [r.resolution_line() for r in found if r.pairs]
    return lines
