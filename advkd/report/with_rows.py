"""``report TABLE --with NAME``: a row for a method the paper does not have, under the protocol of
the rows beside it.

The new row copies the cells of a built-in row that takes the same teachers (its *template*: RSLAD
for a single-teacher method, B-MTARD for a two-teacher one, PGD-AT for a teacher-free one, or the
next in :data:`TEMPLATES` the table has): the same blocks, teachers, attacks and metrics, with no
published number, so each cell is filled by the named method's own records exactly as its
template's cells are. ``--plan --with`` plans its runs with the template's seeds and prices them
as the template's.
"""
from __future__ import annotations

import dataclasses

from advkd.core.errors import AdvkdError
from advkd.methods import METHODS
from advkd.report.paper import PaperRow

__all__ = ["TEMPLATES", "WITH_MARK", "WITH_NOTE", "with_rows", "template_for"]

#: the teacher roles a method takes -> the built-in rows its row may copy, in order of preference
TEMPLATES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("teacher",): ("rslad", "ard", "adaad", "iad", "akd", "adaiad", "fair-ard", "absld"),
    ("clean_teacher", "robust_teacher"): ("bmtard", "mtard", "iad-ii", "lmtn"),
    (): ("pgd-at", "trades", "score", "natural"),
}
WITH_MARK = "⁺"
WITH_NOTE = "ours only"  # the note of a --with row (its CSV value is empty)


def template_for(method: str, rows: list[PaperRow], table: str) -> str:
    """The built-in method whose rows ``method``'s row copies in this table."""
    roles = tuple(METHODS.get(method).roles)
    for name in TEMPLATES.get(roles, ()):
        if any(r.method == name for r in rows):
            return name
    what = {(): "a teacher-free", ("teacher",): "a single-teacher"}.get(roles, "a two-teacher")
    raise AdvkdError(f"{table} has no row that {what} method like {method} can stand beside (--with needs one with the same teachers)")


def with_rows(rows: list[PaperRow], names: list[str], table: str) -> tuple[list[PaperRow], dict[str, str]]:
    """``rows`` plus, per name in ``names`` (a built-in method, a plugin's name or a
    ``module:Class``), a copy of its template's rows; returns them and ``{method: template}``."""
    out, templates = list(rows), {}
    for given in names:
        method = METHODS.canonical(given)
        if method in templates:
            continue
        if any(r.method == method for r in rows):
            raise AdvkdError(f"{method} has its own rows in {table} already; --with is for a method the paper does not have")
        template = template_for(method, rows, table)
        templates[method] = template
        copies = [r for r in rows if r.method == template and not r.note_has("SAT")]
        out += [dataclasses.replace(r, method=method, value="", note=WITH_NOTE, index=-1) for r in copies]
    return out, templates
