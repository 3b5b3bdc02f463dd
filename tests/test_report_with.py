"""report TABLE --with METHOD: a marked row of our numbers for a method the paper does not have,
under the protocol of the row with the same teachers; in the ranking's pairs but not its tau; and
planned (--plan --with) with that row's seeds and price."""
from __future__ import annotations

import json

import pytest
from test_report import rec, teacher

from advkd.core.errors import AdvkdError
from advkd.evaluation.records import RESULTS_FILE
from advkd.report import build_table
from advkd.report.driver import run_report


def _student(method: str, attack: str, accuracy: float) -> dict:
    teachers = {} if method == "pgd-at" else {"teacher": teacher("wrn34-10")}
    return rec(method=method, teachers=teachers, attack=attack, kind="clean" if attack == "clean" else "white-box", accuracy=accuracy,
               run=f"{method}-s0", sha256=f"sha-{method}", checkpoint=f"runs/{method}/best.safetensors", preset="adaad-paper")


def test_a_with_row_copies_its_template_and_holds_our_numbers_only(tmp_path):
    records = [_student("rslad", "clean", 83.0), _student("absld", "clean", 84.5), _student("absld", "pgd10", 53.0)]
    table = build_table("table2", records, with_methods=["absld"])
    assert table.with_templates == {"absld": "rslad"}
    row = next(r for b in table.blocks if b.key == "resnet18" for r in b.rows if r.key == "absld")
    assert row.label == "ABSLD⁺"
    cells = [c for c in table.iter_cells() if c.row == "absld"]
    rslad = [c for c in table.iter_cells() if c.row == "rslad"]
    assert len(cells) == len(rslad) and all(c.ours_only and c.paper == "" and c.diff is None for c in cells)
    clean = next(c for c in cells if c.block == "resnet18" and c.column == "clean" and "wrn34-10" in c.group)
    assert clean.ours == 84.5 and clean.seeds == 1
    assert any("absld: not in the paper (report --with)" in f and "the rslad row" in f for f in table.footnotes)
    (tmp_path / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    text = run_report("table2", fmt="markdown", out=None, runs_dir=tmp_path, with_methods=["absld"])
    line = next(x for x in text.splitlines() if "ABSLD⁺" in x)
    assert "**84.50**" in line and "/" not in line.replace("</", "")  # no published number beside ours
    data = json.loads(run_report("table2", fmt="json", out=None, runs_dir=tmp_path, with_methods=["absld"]))
    assert any(c["row"] == "absld" and c["ours"] == 84.5 and c["paper_value"] is None for c in data["cells"])


def test_with_rows_join_the_pairs_but_not_the_comparison_with_the_paper(tmp_path):
    records = [_student("pgd-at", "clean", 80.0), _student("rslad", "clean", 83.0), _student("absld", "clean", 86.0)]
    (tmp_path / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    data = json.loads(run_report("table2", fmt="json", out=None, runs_dir=tmp_path, ranking=True, with_methods=["absld"]))
    clean = next(r for r in data["ranking"] if r["column"].endswith("WRN-34-10 · Clean"))
    assert clean["rows"] == ["PGD-AT", "RSLAD"]  # tau: only rows with a published number
    assert {(p["higher"], p["lower"]) for p in clean["pairs"]} == {("ABSLD⁺", "RSLAD"), ("ABSLD⁺", "PGD-AT"), ("RSLAD", "PGD-AT")}


@pytest.mark.parametrize("table, method, message", [
    ("table2", "rslad", "rslad has its own rows in table2 already"),
    ("table2", "bmtard", "table2 has no row that a two-teacher method like bmtard can stand beside"),
    ("table2", "nosuchmethod", "unknown method 'nosuchmethod'"),
])
def test_with_refuses_what_it_cannot_place(table, method, message):
    with pytest.raises(AdvkdError, match=message):
        build_table(table, [], with_methods=[method])


def test_plan_with_trains_and_attacks_the_new_row_like_its_template(tmp_path):
    text = run_report("table2", fmt="sh", out=None, runs_dir=tmp_path, plan=True, preset="small", estimate=False,
                      only=["student=resnet18", "teacher=wrn34-10"], with_methods=["absld"])
    distills = [line for line in text.splitlines() if line.startswith("advkd distill --method absld")]
    rslad = [line for line in text.splitlines() if line.startswith("advkd distill --method rslad")]
    assert len(distills) == len(rslad) == 3  # the small preset's three seeds of RSLAD, its template
    assert all("--teacher" in line and "--preset small" in line for line in distills)
    assert "# absld: not in the paper (--with); planned and priced like the rslad row it stands beside" in text
    assert any(line.startswith("advkd attack") and "resnet18-absld-" in line for line in text.splitlines())
