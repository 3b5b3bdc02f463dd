"""``advkd report``: the papers' tables with our numbers beside the published ones.

Public API (the CLI's ``report`` command is a thin layer over it)::

    list_ids() -> [(id, description)]          every table and figure id, in the papers' order
    canonical_id(name) -> csv id               "table2" -> "adaad-table2"; AdvkdError for bmtard-table9 / unknown
    build_table(id, records) -> Table          the paper's layout, cells filled from result records
    render(table, fmt) -> str | renderable     fmt in FORMATS; "rich" gives a Rich renderable for Console.print
    knowledge_scale(logits, temperature)       log C - mean entropy of softmax(logits / τ) (B-MTARD Table I)
    knowledge_records(...)                     the Table I records of one B-MTARD run

The paper numbers are the packaged ``advkd/paper_tables/results.csv`` (see its README).

Pipeline stage 6, the last. Besides the tables (``layouts``, ``match``, ``paper``, ``table``,
``render``, ``ranking``) it holds ``figures/`` (one module per paper), ``knowledge`` (the Table I
formula), ``measure_knowledge`` (Table I's measurement on a finished bmtard run), ``landscape``
(AdaAD Fig. 3's weight-loss landscape), ``plan`` (``--plan``: the commands that fill empty cells)
and ``driver`` (what ``advkd report`` does). May import: ``advkd.core``, ``advkd.data``,
``advkd.models``, ``advkd.attacks``, ``advkd.methods`` (Table I reruns the bmtard inner
maximisation), ``advkd.evaluation`` (records) and ``advkd.training.config`` (presets and run names
for ``--plan``); never the training loop: a report reads records and runs, it never trains.
"""
from __future__ import annotations

from advkd.report.figures import FIGURES, default_landscape_json, render_figure
from advkd.report.knowledge import knowledge_records, knowledge_scale
from advkd.report.layouts import IDS, TABLE9_MESSAGE, TableId, canonical_id, list_ids, lookup
from advkd.report.match import CellSpec, matches, spec_for
from advkd.report.paper import PaperRow, csv_text, load_rows, table_rows
from advkd.report.render import FORMATS, cell_text, render
from advkd.report.table import MINI_WARNING, Block, Cell, Column, Row, Table, build_table

FIGURE_IDS = tuple(t.id for t in IDS if t.is_figure)
TABLE_IDS = tuple(t.id for t in IDS if not t.is_figure)

__all__ = [
    "FIGURES", "FIGURE_IDS", "FORMATS", "default_landscape_json", "render_figure", "IDS", "MINI_WARNING", "TABLE9_MESSAGE", "TABLE_IDS", "Block", "Cell", "CellSpec",
    "Column", "PaperRow", "Row", "Table", "TableId", "build_table", "canonical_id", "cell_text", "csv_text",
    "knowledge_records", "knowledge_scale", "list_ids", "load_rows", "lookup", "matches", "render", "spec_for",
    "table_rows",
]
