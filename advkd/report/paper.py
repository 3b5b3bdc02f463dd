"""The published numbers of both papers: the packaged ``advkd/paper_tables/results.csv``.

One row per printed number (schema and transcription decisions in ``paper_tables/README.md``).
The CSV is read with :mod:`importlib.resources` from inside the installed package, never from
the source tree, and its ``value`` column is kept as TEXT so every number is shown exactly as the
paper prints it ("0", "55.90", "2.2518").
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

FIELDS = (
    "table_id", "paper", "dataset", "student", "teacher", "clean_teacher", "robust_teacher",
    "method", "attack", "metric", "value", "note",
)

_PARAM = re.compile(r"\b([a-z_]+)=([0-9][0-9./]*)")


@dataclass(frozen=True)
class PaperRow:
    """One printed number. ``index`` is its 0-based data-row position in results.csv (line = index + 2)."""

    index: int
    table_id: str
    paper: str
    dataset: str
    student: str
    teacher: str
    clean_teacher: str
    robust_teacher: str
    method: str
    attack: str
    metric: str
    value: str
    note: str

    @property
    def number(self) -> float:
        return float(self.value)

    @property
    def decimals(self) -> int:
        return len(self.value.split(".", 1)[1]) if "." in self.value else 0

    def note_params(self) -> dict[str, str]:
        """``key=value`` settings written in the note, e.g. ``{"init_temperature": "2"}``."""
        return dict(_PARAM.findall(self.note))

    def note_has(self, token: str) -> bool:
        """Whether one ``;``-separated part of the note is exactly ``token`` (e.g. ``SAT``)."""
        return any(part.strip() == token for part in self.note.split(";"))

    @property
    def w_robust_mismatch(self) -> bool:
        """The paper prints a W-Robust that is not (clean + robust) / 2 (kept as printed, marked)."""
        return "w_robust mismatch" in self.note

    def as_dict(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS}


def csv_text() -> str:
    """The packaged results.csv, verbatim."""
    return resources.files("advkd").joinpath("paper_tables", "results.csv").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_rows() -> tuple[PaperRow, ...]:
    reader = csv.DictReader(io.StringIO(csv_text()))
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise RuntimeError(f"packaged results.csv has columns {reader.fieldnames}, expected {list(FIELDS)}")
    return tuple(PaperRow(index=i, **{f: row[f] for f in FIELDS}) for i, row in enumerate(reader))


def table_rows(table_id: str) -> list[PaperRow]:
    """The rows of one CSV table id (``adaad-table2``, ``bmtard-table3``), in the paper's order."""
    return [r for r in load_rows() if r.table_id == table_id]


def csv_table_ids() -> list[str]:
    return list(dict.fromkeys(r.table_id for r in load_rows()))
