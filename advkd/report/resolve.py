"""Whether the data resolve the order of two table cells: each cell's per-image scores per seed,
paired on the seeds both cells share, compared by :func:`advkd.report.uncertainty.paired_bootstrap`.

A cell's number is the mean over its seeds of accuracy on the first N test images; every result
record keeps which of those images the model got right (``robust_flags``), so the comparison
can resample images and seeds instead of trusting a mean ± s.d. A W-Robust cell has two terms per
seed (its clean and its attacked record, which may cover different numbers of images); the
bootstrap keeps each term on its own images, so its point estimate is exactly the cells' difference
over the shared seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from advkd.evaluation.records import unpack_flags
from advkd.report.match import checkpoint_key, newest
from advkd.report.table import Cell
from advkd.report.uncertainty import Paired, paired_bootstrap

__all__ = ["PairVerdict", "seed_scores", "compare_cells", "compare_scores"]


@dataclass(frozen=True)
class PairVerdict:
    """``higher`` is the row our numbers put first; ``paired`` None when ``why`` says it cannot be tested."""

    higher: str
    lower: str
    paired: Paired | None
    why: str = ""

    @property
    def resolved(self) -> bool:
        return self.paired is not None and self.paired.resolved

    def text(self) -> str:
        if self.paired is None:
            return f"{self.higher} ~ {self.lower} ({self.why})"
        p = self.paired
        return f"{self.higher} > {self.lower} ({p.diff:+.1f} [{p.low:+.1f}, {p.high:+.1f}], {p.seeds} seed{'s' if p.seeds > 1 else ''})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"higher": self.higher, "lower": self.lower, "resolved": self.resolved}
        if self.paired is None:
            out["why"] = self.why
        else:
            p = self.paired
            out.update(diff=p.diff, low=p.low, high=p.high, seeds=p.seeds, examples=p.examples)
        return out


def _flags(rec: dict[str, Any]) -> np.ndarray | None:
    flags, n = rec.get("robust_flags"), rec.get("n_examples")
    if not isinstance(flags, str) or not flags or not isinstance(n, int) or n <= 0:
        return None
    return unpack_flags(flags, n).numpy().astype(np.float64)


def _subset_clean(rec: dict[str, Any], records: list[dict[str, Any]]) -> np.ndarray | None:
    """The clean flags behind a subset record's ``clean_accuracy`` (W-Robust of an attack scored on
    the first n images): the first n of its checkpoint's newest clean record, if they agree."""
    key, n = checkpoint_key(rec), rec.get("n_examples")
    cleans = [i for i, r in enumerate(records) if r.get("attack") == "clean" and checkpoint_key(r) == key]
    flags = _flags(records[newest(cleans, records)]) if cleans and isinstance(n, int) else None
    if flags is None or len(flags) < n or abs(100.0 * flags[:n].mean() - float(rec["clean_accuracy"])) > 1e-3:
        return None
    return flags[:n]


def seed_scores(cell: Cell, records: list[dict[str, Any]]) -> dict[str, list[np.ndarray]] | None:
    """Seed -> the per-image flags of each term of that seed's value; None when a record has none."""
    by_seed: dict[str, list[np.ndarray]] = {}
    for i in cell.sources:
        rec = records[i]
        terms = [_flags(rec)]
        if cell.spec.metric == "w_robust" and rec.get("clean_accuracy") is not None:
            terms.append(_subset_clean(rec, records))
        if any(t is None for t in terms):
            return None
        by_seed.setdefault(str(rec.get("seed", rec.get("run"))), []).extend(terms)  # type: ignore[arg-type]
    return by_seed or None


def compare_cells(higher: tuple[str, Cell], lower: tuple[str, Cell], records: list[dict[str, Any]]) -> PairVerdict:
    """Is ``higher`` (label, cell) above ``lower`` beyond test-image and seed noise?"""
    return compare_scores((higher[0], seed_scores(higher[1], records)), (lower[0], seed_scores(lower[1], records)))


Scores = dict[str, list[np.ndarray]] | None


def compare_scores(higher: tuple[str, Scores], lower: tuple[str, Scores]) -> PairVerdict:
    """:func:`compare_cells` on each cell's :func:`seed_scores`, for a caller that compares one
    cell with many (a ranking column) and reads its flags once."""
    (ha, sa), (hb, sb) = higher, lower
    if sa is None or sb is None:
        return PairVerdict(ha, hb, None, "no per-image records")
    shared = sorted(set(sa) & set(sb))
    if not shared:
        return PairVerdict(ha, hb, None, "no seed in common")
    return PairVerdict(ha, hb, paired_bootstrap([sa[k] for k in shared], [sb[k] for k in shared]))
