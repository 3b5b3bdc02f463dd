"""``advkd results``: one row per checkpoint x attack (the newest), filters, CSV / JSON / markdown."""
from __future__ import annotations

import csv
import io
import json

from test_report import rec

from advkd.cli import main


def _write(runs, records):
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_results_are_one_newest_row_per_checkpoint_and_attack(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = {"checkpoint": "runs/distill/cifar10/a-s0/best.safetensors", "sha256": "sha-a", "run": "a-s0", "method": "rslad"}
    b = {"checkpoint": "runs/distill/cifar10/b-s0/best.safetensors", "sha256": "sha-b", "run": "b-s0", "method": "ard", "scale": "small"}
    _write(runs, [
        rec(**a, attack="pgd10", accuracy=10.0, time="2026-01-01T00:00:00+0000"),
        rec(**a, attack="pgd10", accuracy=12.0, time="2026-02-01T00:00:00+0000"),  # newer: wins
        rec(**a, attack="clean", accuracy=40.0),
        rec(**b, attack="pgd10", accuracy=20.0, teachers={"teacher": {"arch": "resnet14", "paper_arch": "wrn34-10"}}),
    ])
    assert main(["results", "--format", "csv", "--runs-dir", str(runs)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and {(r["run"], r["attack"]) for r in rows} == {("a-s0", "pgd10"), ("a-s0", "clean"), ("b-s0", "pgd10")}
    assert next(float(r["accuracy"]) for r in rows if (r["run"], r["attack"]) == ("a-s0", "pgd10")) == 12.0
    assert next(r["teachers"] for r in rows if r["run"] == "b-s0") == "teacher=wrn34-10"
    assert main(["results", "--format", "json", "--attack", "pgd*", "--scale", "small", "--runs-dir", str(runs)]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert (only["run"], only["accuracy"]) == ("b-s0", 20.0)
    assert main(["results", "--format", "markdown", "--method", "rslad", "--runs-dir", str(runs)]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| run | method |") and len(md) == 4
    out = tmp_path / "r.csv"
    assert main(["results", "--format", "csv", "--out", str(out), "--runs-dir", str(runs)]) == 0 and out.read_text().count("\n") == 4
    assert main(["results", "--format", "yaml", "--runs-dir", str(runs)]) == 2
    assert main(["results", "--out", str(out), "--runs-dir", str(runs)]) == 2  # rich has no file form


def test_report_list_follows_the_format(capsys):
    assert main(["report", "list", "--format", "json"]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert {"id": "table2"} .items() <= next(i for i in ids if i["id"] == "table2").items() and len(ids) > 10
    assert main(["report", "list", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| id | what |")


def test_results_repair_moves_bad_lines_aside_then_the_rest_shows(tmp_path, capsys):
    runs = tmp_path / "runs"
    good = {"checkpoint": "runs/distill/cifar10/a-s0/best.safetensors", "sha256": "sha-a", "run": "a-s0", "method": "rslad"}
    _write(runs, [rec(**good, attack="pgd10", accuracy=10.0), rec(**good, attack="clean", accuracy="abc"), rec(**good, attack="clean", accuracy=40.0)])
    assert main(["results", "--runs-dir", str(runs)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["results", "--repair", "--format", "csv", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr()
    assert "moved 1 bad line(s) (2)" in out.err and "kept 2 record(s)" in out.err
    assert {r["attack"] for r in csv.DictReader(io.StringIO(out.out))} == {"pgd10", "clean"}
    assert json.loads((runs / "results.jsonl.bad").read_text())["line"] == 2
    assert main(["results", "--repair", "--runs-dir", str(runs)]) == 0
    assert "nothing to repair" in capsys.readouterr().err
