"""Kendall's tau of our method order against the paper's: the statistic by hand, and the footer
of a hand-made Table 2 whose numbers we choose."""
from __future__ import annotations

import math

import pytest
from test_report import rec, teacher

from advkd.report import build_table
from advkd.report.ranking import kendall_tau, ranking_footer, rankings


def test_kendall_tau_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (6 - 2 * 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie in y: pairs (0,1), (0,2) concordant; (0,3), (1,3), (2,3) discordant; (1,2) tied in y
    # -> (2 - 3) / sqrt((2 + 3 + 0) * (2 + 3 + 1))
    assert kendall_tau([1, 2, 3, 4], [1, 2, 2, 0.5]) == pytest.approx(-1 / math.sqrt(30))
    assert math.isnan(kendall_tau([1, 1], [2, 3]))  # no untied pair on the paper side
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def _clean(method: str, accuracy: float) -> dict:
    teachers = {} if method in ("pgd-at", "trades") else {"teacher": teacher("wrn34-10")}
    return rec(method=method, teachers=teachers, attack="clean", kind="clean", accuracy=accuracy, run=method, sha256=f"sha-{method}",
               checkpoint=f"runs/{method}/best.safetensors", preset="adaad-paper")


def test_table2_ranking_names_the_flipped_pairs():
    # paper, ResNet-18 / WRN-34-10 / Clean: PGD-AT 82.95, ARD 84.04, RSLAD 83.60, AdaAD 86.75
    # ours: AdaAD on top as in the paper, but RSLAD above ARD and PGD-AT above both
    records = [_clean("pgd-at", 50.0), _clean("ard", 40.0), _clean("rslad", 45.0), _clean("adaad", 60.0)]
    table = build_table("table2", records)
    found = {(r.block, r.column): r for r in rankings(table)}
    clean = found[("ResNet-18", "Teacher WRN-34-10 · Clean")]
    assert clean.rows == ["PGD-AT", "ARD", "RSLAD", "AdaAD"]
    # paper order AdaAD > ARD > RSLAD > PGD-AT; ours AdaAD > PGD-AT > RSLAD > ARD: 3 of 6 pairs flip
    assert sorted(clean.flips) == sorted([("ARD", "PGD-AT"), ("RSLAD", "PGD-AT"), ("ARD", "RSLAD")])
    assert clean.tau == pytest.approx(kendall_tau([82.95, 84.04, 83.60, 86.75], [50.0, 40.0, 45.0, 60.0]))
    assert clean.tau == pytest.approx(0.0)
    # the PGD-AT record fills both teacher blocks, but a column with one filled row has no ranking
    assert ("ResNet-18", "Teacher WRN-34-20 · Clean") not in found
    lines = ranking_footer(table)
    assert lines[0].startswith("Ranking vs the paper") and "mean tau +0.00" in lines[0]
    assert any("flipped: ARD > PGD-AT" in line for line in lines[1:])


def test_ranking_footer_without_two_rows_says_so():
    assert ranking_footer(build_table("table2", [])) == ["Ranking vs the paper: needs at least two filled rows in one column; none yet."]


def test_report_ranking_flag_adds_the_footer_and_json(tmp_path):
    import json

    from advkd.evaluation.records import RESULTS_FILE
    from advkd.report.driver import run_report

    (tmp_path / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in [_clean("pgd-at", 50.0), _clean("adaad", 60.0)]))
    text = run_report("table2", fmt="markdown", out=None, runs_dir=tmp_path, ranking=True)
    assert "Ranking vs the paper" in text and "tau +1.00 over 2 rows; no pair flipped" in text
    data = json.loads(run_report("table2", fmt="json", out=None, runs_dir=tmp_path, ranking=True))
    assert data["ranking"][0]["tau"] == 1.0 and data["ranking"][0]["rows"] == ["PGD-AT", "AdaAD"]
    assert "Ranking" not in run_report("table2", fmt="markdown", out=None, runs_dir=tmp_path)


def _small(method: str, accuracy: float) -> dict:
    """A small-scale clean record: ResNet-8 standing in for ResNet-18, its teacher ResNet-14 for WRN-34-10."""
    teachers = {} if method in ("pgd-at", "trades") else {"teacher": {**teacher("wrn34-10"), "arch": "resnet14"}}
    return rec(method=method, teachers=teachers, attack="clean", kind="clean", accuracy=accuracy, run=f"resnet18-{method}-small-s0",
               sha256=f"sha-{method}", checkpoint=f"runs/{method}/best.safetensors", preset="small", scale="small", arch="resnet8")


def test_twin_cells_are_marked_and_no_result_is_ranked_twice():
    from advkd.report.render import render

    records = [_small("pgd-at", 30.0), _small("trades", 31.0), _small("ard", 22.0), _small("rslad", 24.0)]
    table = build_table("table2", records)
    twin = table.cell("resnet18", "ard", *next((c.group, c.key) for c in table.columns if "WRN-34-20" in c.group_label and c.label == "Clean"))
    own = table.cell("resnet18", "ard", *next((c.group, c.key) for c in table.columns if "WRN-34-10" in c.group_label and c.label == "Clean"))
    assert twin.shared and twin.ours == own.ours == 22.0 and not own.shared  # the WRN-34-10 run fills the WRN-34-20 cell too
    text = render(table, "markdown")
    assert "**22.00**ˢ≡" in text and "≡ filled by a run of a twin paper architecture" in text
    found = {(r.block, r.column) for r in rankings(table)}
    # ResNet-18 / WRN-34-10 ranks four rows; WRN-34-20 keeps only the teacher-free rows, which repeat
    # WRN-34-10's, and MobileNet-v2 is all twins: neither is ranked again
    assert found == {("ResNet-18", f"Teacher WRN-34-10 · {c}") for c in ("Clean",)}
    assert "cells filled by a twin's run (≡) left out" in ranking_footer(table)[0]


def test_ranking_says_which_of_our_orders_the_data_resolve(tmp_path):
    """Two seeds each; AdaAD is right on 300 more of 1000 images than PGD-AT (resolved), RSLAD on
    one image more than ARD (not resolved), and per-image flags are what decide it."""
    import json

    import numpy as np
    import torch

    from advkd.evaluation.records import RESULTS_FILE, pack_flags
    from advkd.report.driver import run_report

    hard = np.random.default_rng(0).random(1000)
    right = {"pgd-at": 0.30, "ard": 0.450, "rslad": 0.451, "adaad": 0.60}
    records = []
    for method, share in right.items():
        for seed in (0, 1):
            flags = hard < share
            r = _clean(method, 100 * flags.mean())
            r.update(seed=seed, run=f"{method}-s{seed}", sha256=f"sha-{method}-{seed}", n_examples=1000,
                     robust_flags=pack_flags(torch.from_numpy(flags)))
            records.append(r)
    (tmp_path / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    text = run_report("table2", fmt="markdown", out=None, runs_dir=tmp_path, ranking=True)
    line = next(x for x in text.splitlines() if "Teacher WRN-34-10 · Clean: resolved" in x)
    gap = 100 * ((hard < 0.60).mean() - (hard < 0.30).mean())
    assert "resolved 5 of 6: AdaAD > RSLAD" in line and f"AdaAD > PGD-AT ({gap:+.1f} [" in line and "2 seeds)" in line
    assert line.endswith("within the noise: RSLAD ~ ARD")
    data = json.loads(run_report("table2", fmt="json", out=None, runs_dir=tmp_path, ranking=True))
    pairs = {(p["higher"], p["lower"]): p for p in data["ranking"][0]["pairs"]}
    assert pairs[("RSLAD", "ARD")]["resolved"] is False and pairs[("RSLAD", "ARD")]["low"] <= 0 <= pairs[("RSLAD", "ARD")]["high"]
    assert pairs[("AdaAD", "PGD-AT")]["diff"] == pytest.approx(gap) and pairs[("AdaAD", "PGD-AT")]["seeds"] == 2
