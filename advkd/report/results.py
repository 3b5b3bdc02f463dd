"""``advkd results``: the records of results.jsonl as a flat table (rich, CSV, JSON, markdown).

One row per checkpoint x attack (the newest record of each pair, as the tables use them), with
the columns a pandas user filters on. The CSV loads with ``pandas.read_csv`` unchanged: one
header line, one value per cell, accuracies in percent. :func:`results` (``advkd.results``) is
the same table in Python, as a pandas DataFrame.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from advkd.core import jsonsafe
from advkd.core.errors import AdvkdError
from advkd.evaluation.records import BAD_SUFFIX, RESULTS_FILE, read_records, repair_store, results_path
from advkd.report.match import checkpoint_key, newest

if TYPE_CHECKING:
    import pandas

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


def results(
    runs_dir: str | Path | None = None,
    *,
    checkpoint: str | None = None,
    run: str | None = None,
    method: str | None = None,
    attack: str | None = None,
    scale: str | None = None,
    dataset: str | None = None,
    as_frame: bool = True,
) -> pandas.DataFrame | list[dict[str, Any]]:
    """The table ``advkd results`` prints, for a notebook: one row per checkpoint x attack (its
    newest record), columns :data:`COLUMNS`, accuracies in percent. ``runs_dir``: default
    ``$ADVKD_RUNS_DIR``, else ``./runs``, as the CLI. The filters are glob patterns on their
    columns (``method="*rslad*"``). A pandas DataFrame (the ``pandas`` extra); ``as_frame=False``
    gives the rows as a list of dicts and needs no pandas."""
    runs = runs_dir if runs_dir is not None else os.environ.get("ADVKD_RUNS_DIR") or "./runs"
    given = {"checkpoint": checkpoint, "run": run, "method": method, "attack": attack, "scale": scale, "dataset": dataset}
    rows = result_rows(runs, {k: v for k, v in given.items() if v is not None})
    if not as_frame:
        return rows
    try:
        import pandas
    except ImportError:
        raise ImportError("advkd.results() returns a pandas DataFrame and pandas is not installed: "
                          "pip install 'advkd[pandas]', or pass as_frame=False for a list of dicts") from None
    return pandas.DataFrame.from_records(rows, columns=list(COLUMNS))


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
