"""``advkd results``: the records of results.jsonl as a flat table (rich, CSV, JSON, markdown).

One row per checkpoint x attack (the newest record of each pair, as the tables use them), with
the columns a pandas user filters on. The CSV loads with ``pandas.read_csv`` unchanged: one
header line, one value per cell, accuracies in percent.
"""
from __future__ import annotations

import csv
import fnmatch
import io
from pathlib import Path
from typing import Any

from rich.table import Table

from advkd.core import jsonsafe
from advkd.core.errors import AdvkdError
from advkd.evaluation.records import BAD_SUFFIX, RESULTS_FILE, read_records, repair_store, results_path
from advkd.report.match import checkpoint_key, newest

COLUMNS = (
    "run", "method", "arch", "paper_arch", "dataset", "scale", "preset", "epoch", "seed", "teachers", "attack", "kind",
    "accuracy", "clean_accuracy", "n_examples", "eps", "threat_model", "seconds", "time", "checkpoint", "sha256",
)
FORMATS = ("rich", "csv", "json", "markdown")
FILTERS = ("checkpoint", "run", "method", "attack", "scale", "dataset")  # glob patterns (fnmatch) on these columns


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    teachers = rec.get("teachers") or {}
    row = {k: rec.get(k) for k in COLUMNS}
    row["teachers"] = " ".join(f"{role}={(t or {}).get('paper_arch') or (t or {}).get('arch')}" for role, t in sorted(teachers.items()))
    return row


def result_rows(runs_dir: str | Path, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The newest record of every checkpoint x attack under ``runs_dir``, filtered by glob patterns."""
    filters = filters or {}
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise AdvkdError(f"advkd results: cannot filter on {unknown[0]}; filters: {', '.join(f'--{f}' for f in FILTERS)}")
    records = read_records(Path(runs_dir) / RESULTS_FILE)
    latest: dict[tuple[str, str], int] = {}
    for i, r in enumerate(records):
        key = (checkpoint_key(r), str(r.get("attack")))
        latest[key] = newest([latest[key], i], records) if key in latest else i
    rows = [_row(records[i]) for i in sorted(latest.values())]
    return [r for r in rows if all(fnmatch.fnmatch(str(r.get(k) or ""), pattern) for k, pattern in filters.items())]


def repair_results(runs_dir: str | Path) -> str:
    """Move the bad lines of the runs dir's store aside; one line saying what happened."""
    path = results_path(runs_dir)
    kept, moved = repair_store(path)
    if not moved:
        return f"{path}: every line is a valid record ({kept}); nothing to repair"
    lines = ", ".join(map(str, moved[:10])) + (f" and {len(moved) - 10} more" if len(moved) > 10 else "")
    return (f"{path}: moved {len(moved)} bad line(s) ({lines}) to {path.name}{BAD_SUFFIX} and kept {kept} record(s); "
            f"the file as it was is {path.name}.before-repair")


def render_results(rows: list[dict[str, Any]], fmt: str) -> str | Table:
    if fmt not in FORMATS:
        raise AdvkdError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    if fmt == "json":
        return jsonsafe.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    shown = ("run", "method", "paper_arch", "scale", "epoch", "attack", "accuracy", "n_examples")
    if fmt == "markdown":
        lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
        lines += ["| " + " | ".join(_cell(r.get(k)) for k in shown) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    table = Table(title=f"{len(rows)} result(s)", title_justify="left")
    for col in shown:
        table.add_column(col, justify="right" if col in ("epoch", "accuracy", "n_examples") else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(k)) for k in shown))
    return table


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)
