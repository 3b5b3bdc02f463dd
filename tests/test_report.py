"""advkd.report: paper tables from the packaged CSV, record -> cell matching, renderers, Table I."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from advkd.core.errors import AdvkdError
from advkd.report import (
    FIGURE_IDS,
    FORMATS,
    MINI_WARNING,
    TABLE_IDS,
    build_table,
    canonical_id,
    csv_text,
    knowledge_records,
    knowledge_scale,
    list_ids,
    render,
)

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "paper-tables" / "results.csv"

# ------------------------------------------------------------------------------------------ helpers


def paper_csv(csv_id: str) -> list[dict[str, str]]:
    """The CSV rows of one table, read directly (independently of advkd.report.paper)."""
    return [r for r in csv.DictReader(io.StringIO(csv_text())) if r["table_id"] == csv_id]


def printed(r: dict[str, str]) -> str:
    return r["value"] + ("†" if "w_robust mismatch" in r["note"] else "")


def rec(**kw) -> dict:
    """A result record as ``advkd attack`` writes it (fields that matter for matching)."""
    base = {
        "checkpoint": "runs/distill/cifar10/r1/best.safetensors", "sha256": "sha-r1", "dataset": "cifar10",
        "arch": "resnet18", "paper_arch": "resnet18", "method": "pgd-at", "teachers": {}, "preset": None,
        "scale": "paper", "epoch": 99, "attack": "clean", "kind": "clean", "eps": "8/255", "eps_value": 8 / 255,
        "threat_model": "Linf", "n_examples": 1000, "accuracy": 50.0, "method_params": {}, "train_eps": "8/255",
        "run": "r1", "time": "2025-01-01T00:00:00+0000", "sanity_flags": [],
    }
    base.update(kw)
    return base


def teacher(arch: str, method: str = "trades") -> dict:
    return {"arch": arch, "paper_arch": arch, "sha256": f"sha-{arch}", "method": method}


BMT_TEACHERS = {"clean_teacher": teacher("resnet56", "natural"), "robust_teacher": teacher("wrn34-10")}


def filled(records: list[dict]) -> dict[tuple, object]:
    """Every filled cell of every table: (table id, block, row, group, column) -> Cell."""
    out = {}
    for tid in TABLE_IDS:
        for cell in build_table(tid, records).iter_cells():
            if cell.ours is not None:
                out[(tid, *cell.key)] = cell
    return out


# ------------------------------------------------------------------------------------------ ids


def test_list_ids_has_every_table_and_figure():
    ids = [i for i, _ in list_ids()]
    assert ids == [
        "table1", "table2", "table3", "table4", "table5", "fig2", "fig3",
        *[f"bmtard-table{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)],
        "bmtard-fig3", "bmtard-fig4", "bmtard-fig5", "bmtard-fig6",
    ]
    assert set(FIGURE_IDS) == {"fig2", "fig3", "bmtard-fig3", "bmtard-fig4", "bmtard-fig5", "bmtard-fig6"}
    assert all(desc and "\n" not in desc for _, desc in list_ids())


def test_canonical_id():
    assert canonical_id("table2") == "adaad-table2"
    assert canonical_id("adaad-table2") == "adaad-table2"
    assert canonical_id("bmtard-table3") == "bmtard-table3"
    assert canonical_id("B-MTARD-Table-III") == "bmtard-table3"
    assert canonical_id("fig2") == "adaad-fig2"
    # every table id of the CSV is reachable
    csv_ids = {r["table_id"] for r in csv.DictReader(io.StringIO(csv_text()))} - {"adaad-fig2"}
    assert {canonical_id(t) for t in TABLE_IDS} == csv_ids


def test_table9_is_explained():
    for name in ("bmtard-table9", "bmtard-tableIX"):
        with pytest.raises(AdvkdError, match=r"Table IX \(gradient-estimation attack\) is missing from our source"):
            canonical_id(name)
        with pytest.raises(AdvkdError, match="cannot be reproduced"):
            build_table(name, [])


def test_unknown_id_lists_ids():
    with pytest.raises(AdvkdError, match="bmtard-table11") as err:
        canonical_id("table42")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fig", ["fig2", "fig3", "bmtard-fig3", "bmtard-fig6"])
def test_figures_are_not_tables(fig):
    with pytest.raises(AdvkdError, match="is a figure; use --format png"):
        build_table(fig, [])


# ------------------------------------------------------------------------------------------ paper numbers


def test_packaged_csv_is_the_shared_one():
    if not SHARED_CSV.is_file():
        pytest.skip("no shared paper-tables checkout beside this repo")
    packaged = Path(__file__).resolve().parents[1] / "advkd" / "paper_tables" / "results.csv"
    assert packaged.read_bytes() == SHARED_CSV.read_bytes()
    assert csv_text().encode("utf-8") == SHARED_CSV.read_bytes()


@pytest.mark.parametrize("tid", TABLE_IDS)
def test_layout_keeps_every_number_in_the_papers_order(tid):
    table = build_table(tid, [])
    rows = paper_csv(canonical_id(tid))
    cells = list(table.iter_cells())
    assert len(cells) == len(rows) == len(table.cells)
    assert [c.paper for c in cells] == [r["value"] for r in rows]  # reading order = CSV order
    assert all(c.ours is None and c.sources == [] for c in cells)


def _markdown_cells(text: str, lead: int) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    body = lines[1:]  # header row; the |---| row does not start with "| "
    out = []
    for ln in body:
        parts = [p.strip() for p in ln.strip().strip("|").split(" | ")]
        out += [p for p in parts[lead:] if p]
    return out


@pytest.mark.parametrize("tid", TABLE_IDS)
def test_every_format_prints_every_paper_number_exactly(tid):
    table = build_table(tid, [])
    rows = paper_csv(canonical_id(tid))
    want = [printed(r) for r in rows]

    md = render(table, "markdown")
    assert md.startswith("### ")
    assert _markdown_cells(md, 2 if table.has_blocks else 1) == want

    got = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert [g["paper"] + g["marker"] for g in got] == want
    assert [g["ours"] for g in got] == [""] * len(rows)

    data = json.loads(render(table, "json"))
    assert [c["paper"] + c["marker"] for c in data["cells"]] == want
    assert [c["csv"] for c in data["cells"]] == rows

    tex = render(table, "latex")
    assert tex.count(r"\textcolor{gray}{") == len(rows)
    assert r"\begin{tabular}" in tex and r"\end{table}" in tex

    console = Console(width=400, record=True, file=io.StringIO(), color_system=None)
    console.print(render(table, "rich"))
    text = console.export_text()
    assert table.title in text
    assert "No result record matched" in text


def test_render_formats():
    table = build_table("table1", [])
    for fmt in FORMATS:
        assert render(table, fmt)
    with pytest.raises(AdvkdError, match="choose one of: rich, markdown, csv, json, latex"):
        render(table, "html")


def test_w_robust_mismatch_cells_keep_the_printed_value_with_marker():
    expected = {
        ("bmtard-table4", "cifar10", "trades", "aa", "61.66"),
        ("bmtard-table4", "tinyimagenet", "trades", "cwinf", "28.66"),
        ("bmtard-table4", "tinyimagenet", "ard", "fgsm", "33.21"),
        ("bmtard-table5", "cifar100", "ard", "rays", "56.08"),
        ("bmtard-table5", "cifar100", "score", "square", "50.34"),
    }
    seen = set()
    for tid in TABLE_IDS:
        table = build_table(tid, [])
        for c in table.iter_cells():
            if c.marker:
                assert c.marker == "†" and "w_robust mismatch" in c.flags and c.csv.metric == "w_robust"
                seen.add((tid, c.csv.dataset, c.csv.method, c.csv.attack, c.paper))
        if any(c.marker for c in table.iter_cells()):
            assert any(f.startswith("†") and "kept as printed" in f for f in table.footnotes)
    assert seen == expected


def test_mismatch_cell_with_our_numbers_keeps_paper_value():
    sha = "sha-trades-mnv2"
    recs = [
        rec(arch="mobilenetv2", paper_arch="mobilenetv2", method="trades", sha256=sha, attack="clean", accuracy=78.0),
        rec(arch="mobilenetv2", paper_arch="mobilenetv2", method="trades", sha256=sha, attack="aa", kind="autoattack", accuracy=45.0),
    ]
    table = build_table("bmtard-table4", recs)
    cell = table.cell("cifar10/mobilenetv2", "pgd-at", "aa", "w_robust")  # SAT row is method pgd-at: untouched
    assert cell.ours is None
    cell = table.cell("cifar10/mobilenetv2", "trades", "aa", "w_robust")
    assert cell.paper == "61.66" and cell.marker == "†"
    assert cell.ours == pytest.approx(61.5) and cell.diff == pytest.approx(61.5 - 61.66)
    assert "**61.50** / 61.66† (-0.16)" in render(table, "markdown")


# ------------------------------------------------------------------------------------------ matching


def test_adaad_table2_at_record_fills_both_teacher_blocks_and_nothing_else():
    recs = [rec(attack="clean", accuracy=80.0, preset="adaad-paper"), rec(attack="fgsm", kind="white-box", accuracy=55.0, preset="adaad-paper")]
    got = filled(recs)
    assert set(got) == {
        ("table2", "resnet18", "pgd-at", "wrn34-20", "clean"), ("table2", "resnet18", "pgd-at", "wrn34-10", "clean"),
        ("table2", "resnet18", "pgd-at", "wrn34-20", "fgsm"), ("table2", "resnet18", "pgd-at", "wrn34-10", "fgsm"),
        # AdaAD Table 5's PGD-AT row repeats Table 2 (same experiment)
        ("table5", "resnet18", "pgd-at", "", "clean"), ("table5", "resnet18", "pgd-at", "", "fgsm"),
    }
    cell = got[("table2", "resnet18", "pgd-at", "wrn34-10", "clean")]
    assert cell.ours == 80.0 and cell.diff == pytest.approx(80.0 - 82.95) and cell.sources == [0] and cell.runs == ["r1"]
    assert cell.scale == "paper"
    # without an AdaAD preset the same record is also B-MTARD's SAT (clean column)
    loose = filled([rec(attack="clean", accuracy=80.0)])
    assert ("bmtard-table3", "cifar10/resnet18", "pgd-at", "clean", "acc") in loose


def test_adaad_table2_distilled_record_fills_its_teacher_block_only():
    r = rec(method="ard", teachers={"teacher": teacher("wrn34-10")}, attack="pgd10", kind="white-box", accuracy=52.0)
    assert set(filled([r])) == {("table2", "resnet18", "ard", "wrn34-10", "pgd10")}
    r2 = rec(method="ard", arch="mobilenetv2", paper_arch="mobilenetv2", teachers={"teacher": teacher("wrn34-20")}, attack="aa", accuracy=44.0)
    assert set(filled([r2])) == {("table2", "mobilenetv2", "ard", "wrn34-20", "aa")}


def test_adaad_table4_transfer_matches_the_surrogate():
    r = rec(
        method="adaad", teachers={"teacher": teacher("wrn34-10")}, attack="transfer-pgd10", kind="transfer", accuracy=66.0,
        surrogate={"arch": "vgg16", "paper_arch": "vgg16", "method": "pgd-at", "checkpoint": "s.safetensors", "sha256": "s"},
    )
    got = filled([r])
    assert set(got) == {("table4", "resnet18", "adaad", "vgg16", "transfer-pgd")}
    assert got[("table4", "resnet18", "adaad", "vgg16", "transfer-pgd")].paper == "67.89"
    r["surrogate"] = dict(r["surrogate"], paper_arch="resnet34")
    assert set(filled([r])) == {("table4", "resnet18", "adaad", "resnet34", "transfer-pgd")}
    r["surrogate"] = dict(r["surrogate"], method="trades")  # the paper's surrogates are PGD-AT models
    assert set(filled([r])) == set()


def test_bmtard_table3_clean_and_attack_give_acc_and_computed_w_robust():
    kw = {"method": "bmtard", "teachers": BMT_TEACHERS, "sha256": "sha-bmt", "run": "bmt", "preset": "bmtard-paper"}
    recs = [rec(attack="clean", accuracy=88.0, **kw), rec(attack="pgd20-sat", kind="white-box", accuracy=52.0, **kw)]
    got = filled(recs)
    base = ("bmtard-table3", "cifar10/resnet18", "bmtard")
    table_cells = {k for k in got if k[0] == "bmtard-table3"}
    assert table_cells == {(*base, "clean", "acc"), (*base, "pgd20-sat", "acc"), (*base, "pgd20-sat", "w_robust")}
    w = got[(*base, "pgd20-sat", "w_robust")]
    assert w.ours == pytest.approx(70.0) and w.paper == "69.94" and w.sources == [0, 1]
    assert w.diff == pytest.approx(70.0 - 69.94)
    # the same default-setting run is the chosen row of the ablations and Table V's clean column
    others = set(got) - table_cells
    assert others == {
        ("bmtard-table5", "cifar10/resnet18", "bmtard", "clean", "acc"),
        *{("bmtard-table7", g, "init_temperature=1", "", c) for g in ("pgd20-sat", "pgd20-trades", "cwinf") for c in ("clean",)},
        ("bmtard-table7", "pgd20-sat", "init_temperature=1", "", "robust"),
        ("bmtard-table7", "pgd20-sat", "init_temperature=1", "", "w_robust"),
        *{("bmtard-table8", g, "nlb_exponent=1", "", c) for g in ("pgd20-sat", "pgd20-trades", "cwinf") for c in ("clean",)},
        ("bmtard-table8", "pgd20-sat", "nlb_exponent=1", "", "robust"),
        ("bmtard-table8", "pgd20-sat", "nlb_exponent=1", "", "w_robust"),
        ("bmtard-table10", "", "bmtard", "", "pgd20-sat"),
        ("bmtard-table11", "", "pgd20-sat", "", "resnet56+wrn34-10"),
    }
    # an attack record without the clean record of its checkpoint gives no W-Robust
    lone = build_table("bmtard-table3", [recs[1]])
    cell = lone.cell("cifar10/resnet18", "bmtard", "pgd20-sat", "w_robust")
    assert cell.ours is None and any("no clean record" in f for f in cell.flags)


def test_bmtard_single_teacher_baseline_uses_the_robust_teacher():
    r = rec(method="rslad", teachers={"teacher": teacher("wrn70-16")}, dataset="cifar100", attack="aa", accuracy=27.0)
    assert set(filled([r])) == {("bmtard-table3", "cifar100/resnet18", "rslad", "aa", "acc")}
    r["teachers"] = {"teacher": teacher("wrn34-10")}  # not B-MTARD's CIFAR-100 robust teacher, but AdaAD's
    assert set(filled([r])) == {("table3", "resnet18", "rslad", "wrn34-10", "aa")}


def test_bmtard_table7_row_from_method_params():
    kw = {"method": "bmtard", "teachers": BMT_TEACHERS, "sha256": "sha-t2", "method_params": {"tau_adv_init": 2.0, "tau_nat_init": 2}}
    recs = [rec(attack="clean", accuracy=88.0, **kw), rec(attack="pgd20-sat", kind="white-box", accuracy=51.0, **kw)]
    got = filled(recs)
    assert set(got) == {
        ("bmtard-table7", "pgd20-sat", "init_temperature=2", "", "clean"),
        ("bmtard-table7", "pgd20-trades", "init_temperature=2", "", "clean"),
        ("bmtard-table7", "cwinf", "init_temperature=2", "", "clean"),
        ("bmtard-table7", "pgd20-sat", "init_temperature=2", "", "robust"),
        ("bmtard-table7", "pgd20-sat", "init_temperature=2", "", "w_robust"),
    }
    assert got[("bmtard-table7", "pgd20-sat", "init_temperature=2", "", "w_robust")].ours == pytest.approx(69.5)
    # one temperature alone is no row of Table VII, and not the default either
    recs[0]["method_params"] = {"tau_adv_init": 2.0}
    assert set(filled(recs[:1])) == set()


def test_bmtard_table8_and_ablation_variants():
    kw = {"method": "bmtard", "teachers": BMT_TEACHERS}
    assert set(filled([rec(attack="cwinf", method_params={"nlb_beta": 4}, **kw)])) == {("bmtard-table8", "cwinf", "nlb_exponent=4", "", "robust")}
    assert set(filled([rec(attack="cwinf", method_params={"ebb": False}, **kw)])) == set()  # Fig. 3 variant
    assert set(filled([rec(attack="cwinf", train_eps="32/255", **kw)])) == set()
    assert set(filled([rec(attack="cwinf", method_params={"eps": "32/255"}, **kw)])) == set()
    assert set(filled([rec(attack="cwinf", eps="16/255", eps_value=16 / 255, **kw)])) == set()
    # the recipes' 0.031 is the papers' 8/255
    pgd_at = rec(arch="wrn34-10", paper_arch="wrn34-10", attack="aa", method_params={"eps": "0.031", "step_size": "0.008"}, train_eps="0.031")
    assert set(filled([pgd_at])) == {("table1", "cifar10", "wrn34-10", "", "aa"), ("bmtard-table2", "cifar10", "robust/wrn34-10", "", "aa")}


def test_ablation_defaults_are_the_methods_defaults():
    from advkd.methods import METHODS
    from advkd.report.match import ABLATION_DEFAULTS

    for name, defaults in ABLATION_DEFAULTS.items():
        params = METHODS.get(name).Params()
        assert {k: getattr(params, k) for k in defaults} == defaults


def test_bmtard_table10_and_11():
    lmtn = rec(method="lmtn", teachers=BMT_TEACHERS, attack="aa", accuracy=45.0, sha256="l")
    got = filled([lmtn, rec(method="lmtn", teachers=BMT_TEACHERS, attack="clean", accuracy=89.0, sha256="l")])
    assert set(got) == {("bmtard-table10", "", "lmtn", "", "aa")} and got[("bmtard-table10", "", "lmtn", "", "aa")].ours == pytest.approx(67.0)
    pair = {"clean_teacher": teacher("wrn34-10", "natural"), "robust_teacher": teacher("wrn70-16")}
    recs = [rec(method="bmtard", teachers=pair, attack=a, accuracy=x, sha256="c") for a, x in (("clean", 90.0), ("pgd20-trades", 50.0))]
    assert set(filled(recs)) == {("bmtard-table11", "", "pgd20-trades", "", "wrn34-10-c+wrn70-16")}
    pair["clean_teacher"] = teacher("wrn34-10", "trades")  # a robust WRN-34-10 is not WRN-34-10-C
    assert set(filled(recs)) == set()


def test_teacher_records_fill_teacher_tables():
    nat = rec(arch="resnet56", paper_arch="resnet56", method="natural", attack="clean", accuracy=93.0, preset="bmtard-teacher")
    rob = rec(arch="wrn34-10", paper_arch="wrn34-10", method="trades", attack="pgd10", accuracy=55.0, preset="adaad-teacher")
    assert set(filled([nat])) == {("bmtard-table2", "cifar10", "clean/resnet56", "", "clean")}
    assert set(filled([rob])) == {("table1", "cifar10", "wrn34-10", "", "pgd")}


def test_mini_record_matches_through_paper_arch_and_is_labelled():
    r = rec(arch="resnet8", paper_arch="resnet18", method="adaad", teachers={"teacher": {"arch": "resnet20", "paper_arch": "wrn34-10"}},
            attack="aa", accuracy=30.0, scale="mini", preset="my-mini", run="mini-adaad")  # not shipped: no stand-in twins (test_newcomer)
    got = filled([r])
    assert set(got) == {("table2", "resnet18", "adaad", "wrn34-10", "aa")}
    cell = got[("table2", "resnet18", "adaad", "wrn34-10", "aa")]
    assert cell.scale == "mini" and "mini" in cell.flags
    table = build_table("table2", [r])
    assert table.scales == ["mini"] and table.runs == ["mini-adaad"]
    md = render(table, "markdown")
    assert "**30.00**ᵐ / 50.06 (-20.06)" in md and MINI_WARNING in md and "NOT comparable" in md
    assert "from 1 result record (of 1 read); scale: mini (1 cell); 1 run: mini-adaad" in md and "mini-adaad" in md
    # a mini record that does not say what it stands for matches nothing (arch is never used)
    assert filled([dict(r, paper_arch=None, arch="resnet18", teachers={"teacher": {"arch": "wrn34-10"}})]) == {}


def test_newest_of_several_records_wins_and_is_reported():
    kw = {"method": "rslad", "teachers": {"teacher": teacher("wrn34-20")}, "attack": "cw2"}
    recs = [
        rec(accuracy=70.0, time="2025-01-02T00:00:00+0000", run="b", **kw),
        rec(accuracy=75.0, time="2025-03-01T00:00:00+0000", run="c", **kw),
        rec(accuracy=60.0, time="2025-01-01T00:00:00+0000", run="a", **kw),
    ]
    table = build_table("table2", recs)
    cell = table.cell("resnet18", "rslad", "wrn34-20", "cw2")
    assert cell.ours == 75.0 and cell.sources == [1] and "newest of 3" in cell.flags
    assert table.newest_of and table.newest_of[0][1] == 3
    assert "newest of 3" in render(table, "markdown")
    assert json.loads(render(table, "json"))["n_records_used"] == 1


def test_rich_cells_are_coloured_and_unfilled_dimmed():
    r = rec(method="rslad", teachers={"teacher": teacher("wrn34-20")}, attack="cw2", accuracy=78.0)
    console = Console(width=300, record=True, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(render(build_table("table2", [r]), "rich"))
    out = console.export_text(styles=True)
    assert "78.00" in out and "78.36" in out and "(-0.36)" in out
    assert "\x1b[" in out  # styled


# ------------------------------------------------------------------------------------------ Table I


def test_knowledge_scale_bounds():
    assert knowledge_scale(torch.zeros(8, 10)) == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.full((4, 10), -1e4)
    one_hot[:, 3] = 1e4
    assert knowledge_scale(one_hot) == pytest.approx(math.log(10), abs=1e-9)
    logits = torch.randn(16, 10) * 3
    assert 0.0 < knowledge_scale(logits, 4.0) < knowledge_scale(logits, 1.0) < math.log(10)
    with pytest.raises(AdvkdError):
        knowledge_scale(torch.zeros(10))


def test_knowledge_records_fill_table1():
    g = torch.Generator().manual_seed(0)
    clean, robust = torch.randn(32, 10, generator=g) * 8, torch.randn(32, 10, generator=g)
    meta = {"dataset": "cifar10", "method": "bmtard", "teachers": BMT_TEACHERS, "method_params": {}, "scale": "paper",
            "run": "bmt", "time": "2025-01-01T00:00:00+0000"}
    recs = knowledge_records(clean, robust, tau_nat=3.0, tau_adv=1.0, meta=meta)
    assert [(r["role"], r["balance"], r["temperature"]) for r in recs] == [
        ("clean_teacher", "before", 1.0), ("clean_teacher", "after", 3.0),
        ("robust_teacher", "before", 1.0), ("robust_teacher", "after", 1.0),
    ]
    got = filled(recs)
    assert set(got) == {("bmtard-table1", "", k, "", b) for k in ("clean/resnet56", "robust/wrn34-10") for b in ("before", "after")}
    cell = got[("bmtard-table1", "", "clean/resnet56", "", "after")]
    assert cell.ours == pytest.approx(knowledge_scale(clean, 3.0)) and cell.paper == "1.2480"
    assert "1.2480" in render(build_table("bmtard-table1", recs), "markdown")


def test_table1_is_computed_from_a_finished_bmtard_run(tmp_path):
    """B-MTARD Table I: four knowledge-scale records from the run's teachers and final temperatures."""
    import math

    import torch as _torch

    from advkd.core.progress import Reporter
    from advkd.evaluation.records import read_records
    from advkd.report.measure_knowledge import ensure_knowledge_records
    from advkd.training.config import TrainConfig
    from advkd.training.loop import run

    def cfg(**kw):
        base = dict(arch="tinycnn", dataset="synthetic", epochs=1, batch_size=32, train_subset=64, eval_examples=32, seed=1)
        return TrainConfig(**{**base, **kw})

    quiet, cpu = Reporter(enabled=False), _torch.device("cpu")
    clean = run(cfg(kind="pretrain-teacher", method="natural", name="clean"), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    robust = run(cfg(kind="pretrain-teacher", method="trades", name="robust", method_params={"steps": 2}), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    teachers = {"clean_teacher": str(clean.path / "best.safetensors"), "robust_teacher": str(robust.path / "best.safetensors")}
    done = run(cfg(kind="distill", method="bmtard", teachers=teachers, method_params={"steps": 2, "tau_rate": 0.2}), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    ensure_knowledge_records(tmp_path, data_dir=tmp_path, dataset="synthetic")
    ensure_knowledge_records(tmp_path, data_dir=tmp_path, dataset="synthetic")  # idempotent
    recs = [r for r in read_records(tmp_path / "results.jsonl") if r.get("kind") == "knowledge_scale"]
    assert len(recs) == 4
    after = {r["role"]: r["temperature"] for r in recs if r["balance"] == "after"}
    assert after == {"clean_teacher": done.method_state["tau_nat"], "robust_teacher": done.method_state["tau_adv"]}
    assert all(0 <= r["value"] <= math.log(10) + 1e-6 for r in recs)


def test_a_number_on_few_test_images_says_its_n_and_the_footer_gives_every_columns_n():
    from advkd.report.render import cell_text, render

    recs = [rec(attack="clean", accuracy=80.0, preset="adaad-paper", n_examples=1000),
            rec(attack="aa", kind="white-box", accuracy=62.5, preset="adaad-paper", n_examples=8)]
    table = build_table("table2", recs)
    aa = table.cell("resnet18", "pgd-at", "wrn34-10", "aa")
    clean = table.cell("resnet18", "pgd-at", "wrn34-10", "clean")
    assert (aa.n, clean.n) == (8, 1000)
    assert cell_text(aa).startswith("62.50 n=8 / ") and " n=" not in cell_text(clean)  # 1000 images: no mark
    footer = " ".join(table.footer)
    assert "Test images per number:" in footer and "1000" in footer and " 8" in footer and "fewer than 500 test images" in footer
    assert "n=8" in render(table, "markdown") and '"n": 8' in render(table, "json")
    assert ",8," in render(table, "csv")
