"""Smoke test of the benchmark harness (``python -m benchmarks.bench --quick``).

Checks the JSON structure only -- never timings, which depend on the machine and its load.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from advkd.methods import list_methods

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package
from benchmarks import bench  # noqa: E402
from benchmarks.floors import FLOORS, floor_for  # noqa: E402


def test_every_method_has_a_floor():
    assert set(FLOORS) == set(list_methods())


def test_floor_after_begin_is_selected_by_epoch():
    assert floor_for("iad", epoch=0, begin=60) is FLOORS["iad"]
    assert floor_for("iad", epoch=60, begin=60) is FLOORS["iad"].after_begin
    assert floor_for("rslad", epoch=99, begin=None) is FLOORS["rslad"]
    with pytest.raises(KeyError, match="floors.py"):
        floor_for("no-such-method")


def test_unknown_method_is_a_clean_error(tmp_path, capsys):
    assert bench.main(["--quick", "--methods", "nope", "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_quick_run_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "results" / "quick.json"
    assert bench.main(["--quick", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "overhead" in printed and "torchattacks" in printed

    meta = data["meta"]
    for key in ("torch", "device", "threads", "batch", "student", "teacher", "repeats", "date", "git_sha", "load_avg_before"):
        assert key in meta
    assert meta["student"] == "tinycnn" and meta["batch"] == 32 and meta["quick"] is True

    assert list(data["methods"]) == list_methods()
    for name, r in data["methods"].items():
        for key in ("step_ips", "floor_ips", "overhead", "peak_memory_bytes"):
            assert isinstance(r[key], (int, float)), (name, key)
        assert r["step_ips"] > 0 and r["floor_ips"] > 0 and r["overhead"] > 0
        assert r["peak_memory_bytes"] >= 0
        assert len(r["step_s"]) == len(r["floor_s"]) >= 1  # more rounds run when the machine is noisy
        assert set(r["passes"]) >= {"method", "floor", "match"}

    attacks = data["evaluation"]["attacks"]
    assert set(attacks) == {"pgd20-sat", "cwinf"}
    for name, r in attacks.items():
        for key in ("advkd_ips", "torchattacks_ips", "ratio"):
            assert isinstance(r[key], float) and r[key] > 0, (name, key)
        assert r["ratio"] == pytest.approx(r["advkd_ips"] / r["torchattacks_ips"])
    assert attacks["pgd20-sat"]["faithful"] is True
    assert set(data["summary"]) == {"over_target", "pass_mismatch", "eval_below_target"}
