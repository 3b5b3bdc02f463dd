"""``make gpu-check`` (``python -m benchmarks.gpu_check``) stays runnable without a GPU: its ``--dry-run``
calls every part on the CPU with tiny nets, and a correctness failure makes it exit non-zero.

Checks the JSON structure and the verdicts only -- never timings.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from advkd.methods import list_methods
from advkd.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package
from benchmarks import device_parity as parity  # noqa: E402
from benchmarks import gpu_check  # noqa: E402

ONLY_CORRECTNESS = ["--skip", "torchrun,training,eval,plan"]


def result_file(out: Path) -> dict:
    files = sorted(out.glob("gpu-dry-run-*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".md").is_file()
    return json.loads(files[0].read_text())


def test_dry_run_runs_every_part_and_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    data = result_file(out)
    printed = capsys.readouterr().out
    assert "PASS" in printed and "correctness" in printed

    assert data["meta"]["dry_run"] is True and data["meta"]["device"] == "cpu"
    assert data["summary"] == {"failures": [], "skipped": [], "pass": True}
    assert set(data["parts"]) == set(gpu_check.PARTS)
    assert data["tolerances"] == parity.TOLERANCES

    rows = data["parts"]["correctness"]["rows"]
    assert set(list_methods()) <= set(rows)
    for key, row in rows.items():
        assert row["pass"] is True, (key, row.get("why"))
        assert row["loss_cpu"] == row["loss_device"]  # CPU against CPU: bit-identical
    assert rows["pgd-at"]["random_draws"] > 0 and rows["natural"]["random_draws"] == 0

    training = data["parts"]["training"]
    assert list(training["rows"]) == list(gpu_check.TRAIN_METHODS)
    assert training["defaults_setup"]["fallback_warnings"] == []
    for name, row in training["rows"].items():
        d = row["defaults"]
        assert d["pass"] is True and d["finite"] is True, (name, d.get("why"))
        assert d["last_mean"] < d["first_mean"] and len(d["losses"]) == gpu_check.DRY.default_steps
        assert d["paths"] and "s_median" in row["eager"]

    run = data["parts"]["torchrun"]
    assert run["pass"] is True and run["backend"] == "gloo" and run["ddp_wrapped"] is True and run["allreduce_calls"] >= 2

    ev = data["parts"]["eval"]
    assert set(ev["attacks"]["attacks"]) == {"pgd20-sat", "cwinf"}
    assert ev["autoattack"]["n"] == gpu_check.DRY.aa_n and "flags_equal" in ev["autoattack"]

    plan = data["parts"]["plan"]
    assert plan["first_line"].startswith("# advkd plan for table2") and plan["total_device_hours"] > 0
    assert plan["calibration"]["nets"] and plan["commands"] > 0 and plan["sum_of_commands_hours"] > 0
    assert plan["public_reference_epoch_time"]["seconds_per_epoch"] is None and plan["public_reference_epoch_time"]["note"]


def test_a_correctness_failure_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(parity.TOLERANCES, "loss_atol", -1.0)  # no loss can be within a negative tolerance
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), *ONLY_CORRECTNESS]) == 1
    data = result_file(tmp_path)
    assert data["summary"]["pass"] is False and set(data["parts"]) == {"correctness"}
    assert all(not row["pass"] and "loss differs" in row["why"] for row in data["parts"]["correctness"]["rows"].values())
    assert "FAIL" in capsys.readouterr().out


def test_the_comparison_catches_a_device_that_computes_differently(one_thread):
    """The lock-step comparison itself: CPU against CPU passes bit-exactly; a side whose attack steps
    differently, or whose update skips the weight decay, fails."""
    torch.manual_seed(0)
    models = {"student": build_model("tinycnn").train(), "teacher": build_model("tinycnn").eval().requires_grad_(False)}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    cpu = torch.device("cpu")
    same = parity.lockstep("rslad", 0, models, batches, cpu, 0, parity.TOLERANCES)
    assert same["pass"] and same["loss_abs_diff"] == 0 and same["param_max_abs_diff"] == 0

    class NoWeightDecay(parity.Side):  # the device side's update differs
        def __init__(self, name, epoch, models, device, place=None):
            super().__init__(name, epoch, models, device, place)
            if place is not None:
                for group in self.opt.param_groups:
                    group["weight_decay"] = 0.0

    class BiggerStep(parity.Side):  # the device side's attack differs
        def __init__(self, name, epoch, models, device, place=None):
            super().__init__(name, epoch, models, device, place)
            if place is not None:
                from advkd import methods

                self.probe = methods.build(name, teachers=self.method.teachers, steps=1, step_size="3/255")

    for side, symptom in ((NoWeightDecay, "tensors beyond tolerance"), (BiggerStep, "one attack iteration")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(parity, "Side", side)
            row = parity.lockstep("rslad", 0, models, batches, cpu, 0, parity.TOLERANCES, place=lambda m: m)
        assert not row["pass"] and symptom in row["why"], (side.__name__, row["why"])


def test_cpu_noise_draws_the_cpu_generators_numbers():
    x = torch.rand(2, 3, 4, 4)
    torch.manual_seed(5)
    plain = (torch.empty_like(x).uniform_(-1, 1), torch.randn_like(x), torch.rand(2))
    torch.manual_seed(5)
    with parity.CpuNoise() as noise:
        moved = (torch.empty_like(x).uniform_(-1, 1), torch.randn_like(x), torch.rand(2))
    assert noise.draws == 3 and all(torch.equal(a, b) for a, b in zip(plain, moved))


def test_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--skip", "nope"])
    assert "unknown part" in capsys.readouterr().err
