"""The command line end to end on synthetic data, and its error contract (exit 2, one line)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advkd.cli import main
from advkd.evaluation.records import read_records, unpack_flags

FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32"]
STEPS = ["--set", "method.steps=2"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def advkd(*args: str) -> int:
    return main(list(args))


def test_help_for_every_command(capsys):
    assert advkd("--help") == 0
    out = capsys.readouterr().out
    for cmd in ("pretrain-teacher", "distill", "attack"):
        assert cmd in out
    for cmd, expected in (("pretrain-teacher", ["--arch", "--method", "--resume", "--set", "trades"]), ("distill", ["--student", "--clean-teacher", "rslad", "ard"]), ("attack", ["--suite", "--attacks", "pgd10", "quick", "cw2"])):
        assert advkd(cmd, "--help") == 0
        out = capsys.readouterr().out
        for word in expected:
            assert word in out, (cmd, word)


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "advkd", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("advkd ")


def test_the_cli_needs_no_click_beside_a_typer_that_vendors_it():
    """typer >= 0.20 vendors click and no longer installs it; ``pip install advkd`` alone (no dev
    extra, which pulls click in through robustbench) must still run, refusals included."""
    import importlib.util

    if importlib.util.find_spec("typer._click") is None:
        pytest.skip("this typer uses the external click")
    code = ("import sys; sys.modules['click'] = None\n"
            "from advkd.cli import main\n"
            "sys.exit(main(['attack', 'no-such-checkpoint.safetensors']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "no-such-checkpoint" in out.stderr


def test_pretrain_distill_attack_end_to_end(env, capsys):
    assert advkd("pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST, *STEPS) == 0
    teacher = env / "runs" / "pretrain-teacher" / "synthetic" / "tinycnn-trades-steps2-b32-ev32-n64-s0" / "best.safetensors"
    assert teacher.is_file()
    assert advkd("distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "tinycnn", *FAST, *STEPS) == 0
    student = env / "runs" / "distill" / "synthetic" / "tinycnn-rslad-tinycnn-steps2-b32-ev32-n64-s0" / "best.safetensors"
    assert student.is_file()
    capsys.readouterr()
    assert advkd("attack", "--suite", "quick", "--n-examples", "40", "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(student)  # default: best checkpoint of the newest run
    assert [r["attack"] for r in report["results"]] == ["clean", "fgsm", "pgd10"]
    assert report["method"] == "rslad" and report["teachers"]["teacher"]["arch"] == "tinycnn"
    records = read_records(env / "runs" / "results.jsonl")
    assert len(records) == 3
    rec = {r["attack"]: r for r in records}
    assert rec["pgd10"]["eps"] == "8/255" and rec["pgd10"]["n_examples"] == 40
    assert rec["pgd10"]["correct"] <= rec["clean"]["correct"]
    flags = unpack_flags(rec["pgd10"]["robust_flags"], 40)
    assert int(flags.sum()) == rec["pgd10"]["correct"]
    worst = report["worst_case"]["accuracy"]
    assert worst <= min(r["accuracy"] for r in report["results"]) + 1e-9


def test_attack_rich_table(env, capsys):
    assert advkd("pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST) == 0
    capsys.readouterr()
    assert advkd("attack", "--attacks", "fgsm,pgd10", "--n", "16") == 0
    out = capsys.readouterr().out
    assert "worst case" in out and "pgd10" in out and "W-Robust" in out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert err[0].startswith("advkd: error: ")
    return err[0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["pretrain-teacher", "--arch", "resnet999", "--dataset", "synthetic"], "unknown architecture 'resnet999'"),
        (["pretrain-teacher", "--arch", "tinycnn", "--method", "magic", "--dataset", "synthetic"], "unknown method 'magic'"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "imagenet"], "imagenet"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--epochs", "0"], "epochs must be >= 1"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--set", "lr"], "not key=value"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--set", "method.bogus=1"], "unknown key 'bogus'"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--set", "method.eps=9"], "outside [0, 1]"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--preset", "nope"], "unknown preset"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "cifar10"], "CIFAR-10 not found"),
        (["pretrain-teacher", "--arch", "tinycnn", "--dataset", "synthetic", "--device", "cuda:7"], "cuda"),
        (["distill", "--method", "rslad", "--student", "tinycnn", "--dataset", "synthetic"], "needs --teacher"),
        (["distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "resnet20", "--dataset", "synthetic"], "advkd pretrain-teacher --arch resnet20"),
        (["distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "missing.safetensors", "--dataset", "synthetic"], "not found"),
        (["attack", "missing.safetensors"], "not found"),
        (["attack"], "no checkpoint found"),
        (["attack", "x.safetensors", "--suite", "nope"], "unknown suite 'nope'"),
        (["attack", "x.safetensors", "--attacks", "pgd10,nope"], "unknown attack 'nope'"),
        (["attack", "x.safetensors", "--eps", "8/0"], "eps"),
        (["distill", "--student", "tinycnn"], "--method"),
    ],
)
def test_user_errors_exit_2_with_one_line(env, capsys, args, needle):
    assert advkd(*args) == 2
    line = one_error_line(capsys)
    assert needle in line, line
    runs = env / "runs"
    assert not runs.exists() or not any(p.is_dir() for p in runs.glob("*/*/*")), "no run dir may be left behind"


def test_corrupt_checkpoint(env, capsys):
    bad = env / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    assert advkd("attack", str(bad)) == 2
    assert "corrupt" in one_error_line(capsys)


def test_teacher_of_another_dataset_is_refused(env, capsys):
    real = Path(os.environ.get("ADVKD_TEST_CIFAR", "../shared/data"))
    if not (real / "cifar-10-batches-py").is_dir():
        pytest.skip("offline CIFAR-10 not available")
    assert advkd("pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST) == 0
    ckpt = next((env / "runs").glob("pretrain-teacher/synthetic/*/best.safetensors"))
    capsys.readouterr()
    code = advkd("distill", "--method", "ard", "--student", "tinycnn", "--teacher", str(ckpt), "--dataset", "cifar10", "--data-dir", str(real))
    assert code == 2
    assert "dataset='synthetic' but 'cifar10' is needed" in one_error_line(capsys)
    assert not (env / "runs" / "distill").exists()


def test_resume_flag_continues_and_is_idempotent(env, capsys):
    args = ["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST]
    assert advkd(*args) == 0
    capsys.readouterr()
    assert advkd(*args) == 2
    assert "--resume" in one_error_line(capsys)
    assert advkd(*args, "--resume") == 0
    assert "already complete" in capsys.readouterr().out
    longer = [a if a != "1" else "2" for a in args]  # --epochs 2: a finished run can be extended
    assert advkd(*longer, "--resume") == 0
    assert "resuming" in capsys.readouterr().err


def test_global_options_before_or_after_subcommand(env, capsys):
    other = env / "elsewhere"
    assert advkd("--runs-dir", str(other), "pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST) == 0
    assert list(other.glob("pretrain-teacher/synthetic/*/best.safetensors"))
    third = env / "third"
    assert advkd("pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, "--runs-dir", str(third)) == 0
    assert list(Path(third).glob("pretrain-teacher/synthetic/*/best.safetensors"))


def test_issue_acceptance_commands(env, capsys):
    """The three commands the spine promises, verbatim, in a temporary runs dir."""
    assert advkd("pretrain-teacher", "--arch", "resnet20", "--method", "trades", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "256") == 0
    assert advkd("distill", "--method", "rslad", "--student", "resnet8", "--teacher", "resnet20", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "256") == 0
    capsys.readouterr()
    assert advkd("attack", "--suite", "quick", "--n-examples", "64", "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    from advkd.models.checkpoint import read_metadata

    meta = read_metadata(report["checkpoint"])
    assert meta["arch"] == "resnet8" and meta["dataset"] == "synthetic" and meta["method"] == "rslad"
    assert meta["teachers"]["teacher"]["arch"] == "resnet20" and meta["config"]["train_subset"] == 256
    assert len(read_records(env / "runs" / "results.jsonl")) == 3


def test_threads_works_after_the_subcommand_too():
    from advkd.argv import hoist_root_options as hoist
    from advkd.cli import root_command

    def hoist_root_options(args):
        return hoist(args, root_command())

    assert hoist_root_options(["attack", "x.safetensors", "--threads", "1", "--n", "8"]) == ["--threads", "1", "attack", "x.safetensors", "--n", "8"]
    assert hoist_root_options(["distill", "--threads=2", "--method", "rslad"]) == ["--threads=2", "distill", "--method", "rslad"]
    assert hoist_root_options(["--threads", "1", "attack"]) == ["--threads", "1", "attack"]
    assert hoist_root_options(["attack", "--", "--threads"]) == ["attack", "--", "--threads"]


def test_threads_after_the_subcommand_sets_the_threads(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["results", "--threads", "1", "--runs-dir", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
