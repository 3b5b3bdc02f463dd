"""What a newcomer trips over (issue 16): scale-aware teacher hints, run headers that name the
stand-in, one accuracy unit, resolved teachers in config.yaml, budget overrides in run names,
progress lines that say what they count, and complete help texts."""
from __future__ import annotations

import io
import json
import re

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from advkd.cli import app, main
from advkd.core.files import sha256_file
from advkd.core.progress import Reporter

TINY_PRESET = """
description: test scale - paper archs stand in as tinycnn
scale: mini
arch_map: {resnet56: tinycnn, wrn34-10: tinycnn, resnet18: tinycnn}
train: {epochs: 1, batch_size: 32, train_subset: 64, eval_examples: 32, eval_batch_size: 32, milestones: [], select: last}
"""
STEPS = ["--set", "method.steps=2"]


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    return tmp_path, str(preset)


def _error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("advkd: error: ")
    return err


def test_missing_teachers_are_named_together_with_the_preset_and_the_scale(env, capsys):
    tmp, preset = env
    assert main(["pretrain-teacher", "--arch", "resnet56", "--method", "natural", "--dataset", "synthetic", "--preset", preset]) == 0
    capsys.readouterr()
    # no preset: the store has a resnet56 at the tiny scale only; wrn34-10 nowhere
    err = _error(capsys, "distill", "--method", "bmtard", "--student", "tinycnn", "--dataset", "synthetic",
                 "--clean-teacher", "resnet56", "--robust-teacher", "wrn34-10")
    assert "no clean (natural) resnet56 teacher" in err and "no robust wrn34-10 teacher" in err  # both roles, one line
    assert "advkd pretrain-teacher --arch resnet56 --method natural --dataset synthetic && advkd pretrain-teacher --arch wrn34-10 --method trades" in err
    assert "paper scale" in err and "--preset mini" in err  # warned before a days-long command
    # one missing role at the preset's scale: the hint keeps the preset, with no paper-scale warning
    err = _error(capsys, "distill", "--method", "rslad", "--student", "resnet18", "--dataset", "synthetic", "--teacher", "wrn34-10", "--preset", preset)
    assert "at preset tiny (tinycnn standing in)" in err and f"--preset {preset}" in err and "paper scale" not in err
    # the teacher exists at another scale: say where, and which --preset finds it
    err = _error(capsys, "distill", "--method", "rslad", "--student", "tinycnn", "--dataset", "synthetic", "--teacher", "resnet56")
    assert "exists at another scale" not in err  # a clean teacher does not stand in for a robust one
    assert main(["pretrain-teacher", "--arch", "wrn34-10", "--method", "trades", "--dataset", "synthetic", "--preset", preset, *STEPS]) == 0
    capsys.readouterr()
    err = _error(capsys, "distill", "--method", "rslad", "--student", "tinycnn", "--dataset", "synthetic", "--teacher", "wrn34-10")
    assert "a wrn34-10 teacher exists at another scale:" in err and f"wrn34-10-trades-tiny-steps2-s0/best.safetensors (preset tiny: add --preset {preset})" in err
    # several roles missing: the teachers found elsewhere are still named
    err = _error(capsys, "distill", "--method", "bmtard", "--student", "tinycnn", "--dataset", "synthetic",
                 "--clean-teacher", "resnet56", "--robust-teacher", "wrn34-10")
    assert "create them with:" in err and err.count("exists at another scale") == 2


def test_a_run_names_its_stand_in_scale_and_budget_and_records_percent_and_its_teacher(env, capsys):
    tmp, preset = env
    runs = tmp / "runs"
    assert main(["pretrain-teacher", "--arch", "wrn34-10", "--method", "trades", "--dataset", "synthetic", "--preset", preset, *STEPS]) == 0
    err = capsys.readouterr().err
    assert re.search(r"pretrain-teacher trades: tinycnn standing in for wrn34-10 on synthetic \(preset tiny, scale mini; 1 epoch x 64 images = 2 steps\)", err), err
    teacher = runs / "pretrain-teacher" / "synthetic" / "wrn34-10-trades-tiny-steps2-s0"
    row = json.loads((teacher / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["train_acc"] <= 100.0 and 0.0 <= row["clean_acc"] <= 100.0
    assert main(["distill", "--method", "rslad", "--student", "resnet18", "--dataset", "synthetic", "--teacher", "wrn34-10", "--preset", preset, *STEPS]) == 0
    err = capsys.readouterr().err
    assert "distill rslad: tinycnn standing in for resnet18" in err and "teacher tinycnn (for wrn34-10)" in err
    student = runs / "distill" / "synthetic" / "resnet18-rslad-wrn34-10-tiny-steps2-s0"
    cfg = yaml.safe_load((student / "config.yaml").read_text())
    assert cfg["teachers"] == {"teacher": "wrn34-10"}  # as typed ...
    resolved = cfg["resolved_teachers"]["teacher"]  # ... and what it resolved to
    assert resolved["source"] == str(teacher / "best.safetensors") and resolved["sha256"] == sha256_file(teacher / "best.safetensors")
    assert (resolved["arch"], resolved["paper_arch"], resolved["method"]) == ("tinycnn", "wrn34-10", "trades")


def test_natural_training_accuracy_is_a_percent(env):
    tmp, preset = env
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--dataset", "synthetic", "--epochs", "2",
                 "--set", "train_subset=256", "--set", "eval_examples=32"]) == 0
    (metrics,) = (tmp / "runs").glob("pretrain-teacher/synthetic/*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert rows[-1]["train_acc"] > 1.0  # a learnable 10-class set above chance: a fraction would stay <= 1


def test_budget_overrides_are_in_the_run_name_and_epochs_are_not(env, capsys):
    tmp, preset = env
    base = ["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--dataset", "synthetic", "--preset", preset]
    assert main(base) == 0
    assert main([*base, "--train-subset", "32"]) == 0  # another budget: another run, not "already exists"
    assert main([*base, "--set", "lr=0.05", "--set", "milestones=[1]"]) == 0
    names = sorted(p.name for p in (tmp / "runs" / "pretrain-teacher" / "synthetic").iterdir())
    assert names == ["tinycnn-natural-tiny-lr0.05-ms1-s0", "tinycnn-natural-tiny-n32-s0", "tinycnn-natural-tiny-s0"]
    assert main([*base, "--train-subset", "64"]) == 2  # the preset's own value changes nothing: that run exists
    assert "already exists" in capsys.readouterr().err
    assert main([*base, "--epochs", "2", "--resume"]) == 0  # a larger --epochs extends the same run
    rows = (tmp / "runs" / "pretrain-teacher" / "synthetic" / "tinycnn-natural-tiny-s0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_progress_lines_say_what_they_count_with_a_rate():
    buf = io.StringIO()
    reporter = Reporter(console=Console(file=buf, width=200), force_plain=True)
    with reporter.task("pgd10", total=4, unit="clean-correct points") as task:
        task.advance(4, acc=12.5)
    line = buf.getvalue().strip()
    assert re.search(r"pgd10: 4/4 clean-correct points in [0-9.]+s \(([0-9.e+]+/s|[0-9.e+-]+ s each)\) acc=12\.5$", line), line


def test_a_resumed_epoch_times_only_the_batches_this_process_ran(monkeypatch):
    """A run resumed after batch 48 of 282 must not count those 48 as done in no time."""
    import advkd.core.progress as progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    reporter = Reporter(console=Console(file=io.StringIO(), width=200), force_plain=True)
    task = progress.Task(reporter, "epoch 8/8", total=300, unit="batches")
    task.skip(100)  # before the stop
    now[0] = 20.0
    task.advance(10)  # ten batches in this process, over 20 s
    assert task.rate() == "2 s each"
    assert task.line(final=False).startswith("epoch 8/8: 110/300 batches 2 s each, ETA 6m20s")


def test_help_texts_are_complete_and_plain():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "or one of:" not in top and "(ID: a table or figure, or 'list')" in top
    attack = runner.invoke(app, ["attack", "--help"], env={"COLUMNS": "200"}).output
    assert "``" not in attack
    assert 'Tramer et al., "On Adaptive Attacks to Adversarial Example Defenses"' in " ".join(attack.split())
    landscape = runner.invoke(app, ["landscape", "--help"], env={"COLUMNS": "200"}).output
    assert "UNCONFIRMED" not in landscape
    for command in ("distill", "pretrain-teacher", "attack"):  # no references to the project's internal spec
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert not re.search(r"\(spec |; spec |spec single-teacher", text), command
    distill = " ".join(runner.invoke(app, ["distill", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "pgd-at (no teacher): PGD-AT (Madry et al.) as the AdaAD repo runs it: CE-PGD on the student, CE on x*." in distill


def test_a_usage_error_points_to_the_subcommands_help(capsys):
    assert main(["attack", "--no-such-option"]) == 2
    assert capsys.readouterr().err.strip().endswith("(see advkd attack --help)")


def test_a_plan_trains_one_run_per_stand_in_and_says_which_cells_share_it(tmp_path, capsys):
    """At mini, WRN-34-10 and WRN-34-20 are both ResNet-14, ResNet-18 and MobileNet-v2 both ResNet-8."""
    assert main(["report", "table2", "--plan", "--preset", "mini", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    commands = [line for line in out if line and not line.startswith("#")]
    teachers = [c for c in commands if c.startswith("advkd pretrain-teacher")]
    assert len(teachers) == 1 and "--arch wrn34-20" in teachers[0]  # the table's first block; nothing on disk yet
    distills = [c for c in commands if c.startswith("advkd distill")]
    assert len(distills) == 8 and all("--student resnet18" in c for c in distills)  # one per method, not four
    assert "# resnet18-rslad-wrn34-20-mini-s0 also fills the cells of mobilenetv2-rslad-wrn34-10-mini-s0, mobilenetv2-rslad-wrn34-20-mini-s0, resnet18-rslad-wrn34-10-mini-s0 (the same stand-in networks at this scale)" in out
    # a twin already on disk is reused (the demo's WRN-34-10 teacher)
    (tmp_path / "pretrain-teacher" / "cifar10" / "wrn34-10-trades-mini-s0").mkdir(parents=True)
    assert main(["report", "table2", "--plan", "--preset", "mini", "--runs-dir", str(tmp_path)]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("advkd ")]
    assert [c for c in commands if c.startswith("advkd pretrain-teacher")][0].split()[3] == "wrn34-10"
    assert all("wrn34-10-trades-mini-s0/best.safetensors" in c for c in commands if "--teacher" in c)
    # paper scale has no stand-ins: nothing is shared
    assert main(["report", "table2", "--plan", "--preset", "paper", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "also fills" not in out and out.count("advkd pretrain-teacher") == 2


def test_a_stand_in_twin_fills_the_cell_flagged_and_an_exact_run_wins():
    from test_report import rec, teacher

    mini_teacher = {"arch": "resnet14", "paper_arch": "wrn34-10", "sha256": "t", "method": "trades"}
    r = rec(arch="resnet8", paper_arch="resnet18", method="rslad", teachers={"teacher": mini_teacher}, attack="pgd10",
            accuracy=20.0, scale="mini", preset="mini", run="resnet18-rslad-wrn34-10-mini-s0")
    from advkd.report import build_table

    table = build_table("table2", [r])
    twin = table.cell("mobilenetv2", "rslad", "wrn34-20", "pgd10")
    assert twin.ours == 20.0 and "shared stand-in: run resnet18-rslad-wrn34-10-mini" in twin.flags
    own = table.cell("resnet18", "rslad", "wrn34-10", "pgd10")
    assert own.ours == 20.0 and not any(f.startswith("shared") for f in own.flags)
    exact = dict(r, paper_arch="mobilenetv2", accuracy=15.0, run="mobilenetv2-rslad-wrn34-20-mini-s0",
                 teachers={"teacher": dict(mini_teacher, paper_arch="wrn34-20")}, time="2020-01-01T00:00:00+0000")
    assert build_table("table2", [r, exact]).cell("mobilenetv2", "rslad", "wrn34-20", "pgd10").ours == 15.0  # older, but exact
    # at paper scale nothing is shared
    paper = dict(r, arch="resnet18", scale="paper", preset="adaad-paper", teachers={"teacher": teacher("wrn34-10")})
    assert build_table("table2", [paper]).cell("mobilenetv2", "rslad", "wrn34-20", "pgd10").ours is None


def test_a_long_paper_scale_run_on_a_cpu_names_the_smaller_presets_at_once():
    from advkd.training.eta import early_estimate, run_eta

    long_cpu = early_estimate(2.0, 78_000, device_type="cpu", scale="paper")  # 200 epochs x 390 batches at 2 s
    assert long_cpu.startswith("this run: about 43h20m of training") and "--preset mini" in long_cpu and "--preset small" in long_cpu
    assert "--preset" not in early_estimate(2.0, 78_000, device_type="cuda", scale="paper")
    assert "--preset" not in early_estimate(2.0, 100, device_type="cpu", scale="paper")  # minutes: nothing to say
    assert "--preset" not in early_estimate(2.0, 78_000, device_type="cpu", scale="mini")
    assert run_eta([60.0, 120.0], 3) == "run ETA 4m30s" and run_eta([60.0], 0) == ""


def test_a_busy_machine_is_named_once_before_cpu_work(monkeypatch):
    from advkd.core import accel

    monkeypatch.delenv("ADVKD_NO_LOAD_WARNING", raising=False)
    monkeypatch.setattr(accel.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(accel.os, "getloadavg", lambda: (4.2, 3.0, 2.0))
    line = accel.busy_machine_warning()
    assert "load 4.2 on 2 cores" in line and "--threads 1" in line
    monkeypatch.setattr(accel.os, "getloadavg", lambda: (2.3, 3.0, 2.0))
    assert accel.busy_machine_warning() == ""  # within the cores (+0.5)
    monkeypatch.setenv("ADVKD_NO_LOAD_WARNING", "1")
    monkeypatch.setattr(accel.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert accel.busy_machine_warning() == ""


def test_threads_option_sets_torchs_threads(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "report", "list", "--format", "json"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["--threads", "0", "report", "list"]) == 2 and "--threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
