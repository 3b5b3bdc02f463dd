"""Smoke test of the benchmark harness (``python -m benchmarks.bench --quick``).

Checks the JSON structure only -- never timings, which depend on the machine and its load.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

from advkd.methods import list_methods
from advkd.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package
from benchmarks import bench, first_run  # noqa: E402
from benchmarks.autoattack_pair import bench_autoattack  # noqa: E402
from benchmarks.floors import FLOORS, floor_for  # noqa: E402

AA_KEYS = {"n", "batch_size", "pairs", "discarded_pairs", "fold_bn", "freeze", "channels_last", "bn_modules", "bn_modules_after_fold", "advkd_s", "library_s",
           "advkd_s_median", "library_s_median", "ratio", "ratio_min", "advkd_robust_acc", "library_robust_acc", "flags_equal",
           "flags_differ", "advkd_flags_rescored_equal", "x_adv_allclose", "x_adv_atol", "x_adv_points_differ", "x_adv_max_abs_diff",
           "load_avg_before", "load_avg_after"}


def test_every_method_has_a_floor():
    assert set(FLOORS) == set(list_methods())


def test_floor_after_begin_is_selected_by_epoch():
    assert floor_for("iad", epoch=0, begin=60) is FLOORS["iad"]
    assert floor_for("iad", epoch=60, begin=60) is FLOORS["iad"].after_begin
    assert floor_for("rslad", epoch=99, begin=None) is FLOORS["rslad"]
    with pytest.raises(KeyError, match="passes.py"):
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
    aa = data["evaluation"]["autoattack"]
    assert set(aa) >= AA_KEYS | {"model", "init", "checkpoint", "note"}
    assert aa["n"] == 8 and aa["pairs"] == 2 and len(aa["advkd_s"]) == len(aa["library_s"]) == 2  # quick: 1 warm-up + 1 timed pair
    assert aa["checkpoint"] is None and aa["bn_modules"] > 0 and aa["bn_modules_after_fold"] == 0
    assert data["targets"]["aa_ratio_min"] == bench.AA_RATIO_TARGET == 1.25
    assert set(data["summary"]) == {"over_target", "pass_mismatch", "eval_below_target", "aa_below_target"}
    assert data["summary"]["aa_below_target"] == (aa["ratio"] < bench.AA_RATIO_TARGET)
    assert "pyautoattack" in printed and "AutoAttack" in bench.markdown(data)


# ------------------------------------------------------------------------------ AutoAttack pair


def test_autoattack_pair_discards_the_warm_up_pair_and_compares_both_sides():
    pytest.importorskip("pyautoattack")
    torch.manual_seed(0)
    model = build_model("tinycnn", num_classes=10).eval()
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():  # sharper convs and labels = predictions: every point is attacked and APGD breaks it (short runs)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3)
        y = model(x).argmax(1)
    lines: list[str] = []
    r = bench_autoattack(model, x, y, pairs=2, batch_size=4, device=torch.device("cpu"), log=lines.append)
    assert set(r) >= AA_KEYS
    assert len(r["advkd_s"]) == len(r["library_s"]) == 2
    assert r["advkd_s_median"] == statistics.median(r["advkd_s"][1:])  # the first pair is the warm-up
    assert r["library_s_median"] == statistics.median(r["library_s"][1:])
    assert r["ratio"] == pytest.approx(r["library_s_median"] / r["advkd_s_median"])
    assert r["bn_modules"] == 2 and r["bn_modules_after_fold"] == 0
    assert r["flags_equal"] is True and r["flags_differ"] == 0  # APGD breaks both sides alike
    assert all(p.grad is None for p in model.parameters())  # the library's FAB grads are dropped
    assert len(lines) == 1 and "eval aa" in lines[0]
    with pytest.raises(ValueError, match="pairs >= 2"):
        bench_autoattack(model, x, y, pairs=1, batch_size=4, device=torch.device("cpu"), log=lines.append)


# ------------------------------------------------------------------------------ first run vs warm run


def test_first_run_needs_a_checkpoint_for_the_autoattack_job(capsys):
    with pytest.raises(SystemExit) as e:
        first_run.main(["--out", "unused.json"])
    assert e.value.code == 2 and "--checkpoint" in capsys.readouterr().err


def test_first_run_untuned_children_start_with_no_mallopt(monkeypatch):
    monkeypatch.setenv("ADVKD_NO_MALLOPT", "1")
    assert "ADVKD_NO_MALLOPT" not in first_run.child_env("tuned")
    monkeypatch.delenv("ADVKD_NO_MALLOPT")
    assert first_run.child_env("untuned")["ADVKD_NO_MALLOPT"] == "1"


@pytest.mark.slow  # four fresh Python processes (~5 s each, mostly importing torch)
def test_first_run_quick_writes_one_fresh_process_per_job_and_malloc(tmp_path, capsys):
    out = tmp_path / "first-run.json"
    assert first_run.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("torch", "threads", "date", "git_sha", "load_avg_before", "load_avg_after", "command"):
        assert key in data["meta"]
    runs = data["runs"]
    assert [(r["job"], r["malloc"]) for r in runs] == [(j, m) for j in first_run.JOBS for m in first_run.MALLOC]
    assert len({r["pid"] for r in runs}) == 4  # a fresh process each
    for r in runs:
        assert len(r["seconds"]) == len(r["minor_faults"]) == 2 and all(s > 0 for s in r["seconds"])
        assert r["env_no_mallopt"] == ("1" if r["malloc"] == "untuned" else None)
        if r["malloc"] == "untuned":
            assert r["mallopt"] is False
        if r["job"] == "train-epoch":
            assert all(i["epoch_s"] > 0 for i in r["info"])
        else:
            assert all("aa" in i and "clean" in i for i in r["info"])
    printed = capsys.readouterr().out
    assert "| job | malloc | first run s | second run s | first/second |" in printed
    assert printed.count("| autoattack |") == 2 and printed.count("| train-epoch |") == 2


# ------------------------------------------------------------------------------ the frozen path on and off


def test_freeze_ab_times_three_sides_per_round_and_takes_medians_after_the_warm_up(tmp_path, monkeypatch):
    pytest.importorskip("pyautoattack")
    from benchmarks import freeze_ab

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()  # APGD-CE breaks it: each run is short
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    monkeypatch.setattr(freeze_ab, "load_points", lambda *a, **k: (model, x, y, {"model": "tinycnn", "init": "random"}))
    seen: list[bool] = []
    real = freeze_ab.advkd_aa
    monkeypatch.setattr(freeze_ab, "advkd_aa", lambda *a, paths, **k: (seen.append(paths.freeze), real(*a, paths=paths, **k))[1])
    out = tmp_path / "ab.json"
    assert freeze_ab.main(["--aa-checkpoint", "unused", "--rounds", "3", "--batch", "4", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert seen == [True, False] * 3  # frozen, then --no-freeze, each round
    assert all(len(r["seconds"][s]) == 3 for s in freeze_ab.SIDES)
    for s in freeze_ab.SIDES:
        assert r["median_s"][s] == statistics.median(r["seconds"][s][1:])  # the first round is the warm-up
    assert r["library_over_frozen"] == pytest.approx(r["median_s"]["library"] / r["median_s"]["frozen"])
    assert r["eager_over_frozen"] == pytest.approx(r["median_s"]["eager"] / r["median_s"]["frozen"])
    with pytest.raises(SystemExit):
        freeze_ab.main(["--aa-checkpoint", "unused", "--rounds", "1"])


# ------------------------------------------------------------------------------ CPU default paths (benchmarks/cpu_paths.py)


def test_cpu_paths_times_the_device_default_against_fp32_nchw(tmp_path, capsys):
    from advkd.core import accel
    from benchmarks import cpu_paths

    out = tmp_path / "cpu-paths.json"
    assert cpu_paths.main(["--quick", "--methods", "pgd-at,rslad", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["methods"]) == ["pgd-at", "rslad"]
    assert data["meta"]["paths"] == accel.device_defaults(torch.device("cpu")).describe()
    bf16_peak = data["meta"]["peak_gflops"]["bf16"]
    assert data["meta"]["peak_gflops"]["fp32"] > 0 and (bf16_peak > 0 if data["meta"]["fast_paths"]["amp"] else bf16_peak is None)
    assert data["meta"]["paths_are_device_default"] is True
    for r in data["methods"].values():
        assert len(r["default_s"]) == len(r["plain_s"]) >= 1
        assert r["speedup"] == pytest.approx(r["plain_s_median"] / r["default_s_median"])
        assert r["floor_gflop"] > 0 and r["default_peak_fraction"] > 0 and r["plain_peak_fraction"] > 0
    assert "speed-up" in capsys.readouterr().out and "| rslad |" in cpu_paths.markdown(data)
    assert set(data["below_target"]) <= {"pgd-at", "rslad"}


def test_cpu_paths_times_a_candidate_the_device_does_not_default_to(tmp_path):
    from benchmarks import cpu_paths

    out = tmp_path / "candidate.json"
    assert cpu_paths.main(["--quick", "--methods", "pgd-at", "--repeats", "1", "--paths", "channels-last", "--out", str(out)]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert (meta["paths"], meta["paths_are_device_default"], meta["peak_gflops"]["bf16"]) == ("fp32, channels-last", False, None)
    assert "candidate" in cpu_paths.markdown(json.loads(out.read_text()))
    with pytest.raises(SystemExit) as bad:
        cpu_paths.main(["--quick", "--paths", "bf17"])
    assert bad.value.code == 2


def test_eval_memory_format_times_both_formats_of_the_evaluation_copy(tmp_path):
    from benchmarks import eval_memory_format

    out = tmp_path / "eval.json"
    assert eval_memory_format.main(["--archs", "tinycnn", "--batch", "8", "--repeats", "1", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["archs"]["tinycnn"]
    assert len(row["nchw_s"]) == len(row["channels_last_s"]) >= 1 and row["speedup"] > 0


def test_the_roofline_counts_a_floors_flops_by_hand():
    """natural's floor on a linear net: forward 2·B·in·out, backward the weight gradient only (the
    input needs none), 2·B·in·out: 4·B·in·out FLOPs."""
    from benchmarks import cpu_paths

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    assert cpu_paths.floor_flops("natural", net, {}, x, y, epoch=0) == 4 * 4 * 3072 * 10


def test_the_precision_table_judges_each_method_by_the_seed_spread_or_one_and_a_half_points():
    from benchmarks import precision_accuracy

    def rec(run: str, attack: str, acc: float) -> dict:
        return {"run": run, "attack": attack, "accuracy": acc}

    recs = [rec("pgd-at-s0-default", "clean", 30.0), rec("pgd-at-s0-default", "pgd10", 20.0),
            rec("pgd-at-s1-default", "clean", 31.0), rec("pgd-at-s1-default", "pgd10", 21.0),
            rec("pgd-at-s0-fp32-nchw", "clean", 31.0), rec("pgd-at-s0-fp32-nchw", "pgd10", 21.4),
            rec("pgd-at-s1-fp32-nchw", "clean", 32.0), rec("pgd-at-s1-fp32-nchw", "pgd10", 22.0),  # PGD-10 gap -1.2: within 1.5
            rec("rslad-s0-default", "clean", 20.0), rec("rslad-s0-default", "pgd10", 3.0),
            rec("rslad-s0-fp32-nchw", "clean", 20.1), rec("rslad-s0-fp32-nchw", "pgd10", 5.0)]  # gap -2.0 > 1.5, one seed
    table = precision_accuracy.table(recs)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in table.splitlines()[2:]}
    assert "30.50 ± 0.50" in rows[("pgd-at", "default")] and "-1.00 / -1.20" in rows[("pgd-at", "default")]
    assert rows[("pgd-at", "default")].rstrip(" |").endswith("yes")
    assert rows[("rslad", "default")].rstrip(" |").endswith("**no**")
