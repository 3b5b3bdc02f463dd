"""Failures a user cannot prevent, handled: a fast path that breaks on this machine falls back
to the plain path with one warning; Ctrl-C says how to resume; operating-system errors and late
or sloppy inputs end as one line with exit code 2 before any work."""
from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import advkd.core.accel as accel
from advkd.argv import interrupted_line as _interrupted_line
from advkd.cli import main, root_command
from advkd.core.accel import FastPaths
from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError, Interrupted
from advkd.core.oserrors import check_writable, describe
from advkd.core.progress import Reporter
from advkd.models.checkpoint import read_metadata
from advkd.training.config import TrainConfig
from advkd.training.loop import run

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def interrupted_line(args):
    return _interrupted_line(args, root_command())


def tiny(name: str) -> TrainConfig:
    return TrainConfig(
        kind="pretrain-teacher", method="pgd-at", arch="tinycnn", dataset="synthetic", epochs=1, batch_size=32, train_subset=64,
        eval_examples=32, eval_batch_size=32, milestones=[], lr=0.05, seed=1, name=name, method_params={"steps": 1},
    )


def _train(tmp_path, name: str, fast: FastPaths):
    summary = run(tiny(name), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Reporter(enabled=False), fast=fast)
    return load_file(str(summary.path / "best.safetensors")), read_metadata(summary.path / "best.safetensors")


def _broken_compile(model):
    def fails(*args, **kwargs):
        raise RuntimeError("InductorError: CppCompileError: C++ compile error (no working compiler)")

    model._compiled_call_impl = fails  # what a failing inductor does on the first forward


@pytest.mark.parametrize("switch,breaker", [("compile", "compile"), ("amp", "autocast"), ("channels_last", "memory_format")])
def test_a_failing_fast_path_falls_back_to_the_plain_path(tmp_path, monkeypatch, capsys, switch, breaker):
    plain, _ = _train(tmp_path, "plain", FastPaths())
    original = accel._enable
    if breaker == "compile":
        monkeypatch.setattr(accel, "_enable", lambda name, m: _broken_compile(m) if name == "compile" else original(name, m))
    elif breaker == "autocast":
        def no_bf16(*a, **k):
            raise RuntimeError("bf16 autocast is not supported on this device")

        monkeypatch.setattr(torch, "autocast", no_bf16)
    else:
        def no_channels_last(name, m):
            if name == "channels_last":
                raise RuntimeError("channels_last is not supported for this layer")
            original(name, m)

        monkeypatch.setattr(accel, "_enable", no_channels_last)
    capsys.readouterr()
    weights, meta = _train(tmp_path, "fallback", FastPaths(**{switch: True}))
    err = capsys.readouterr().err.strip().splitlines()
    flag = {"compile": "--no-compile", "amp": "--no-amp", "channels_last": "--no-channels-last"}[switch]
    assert len(err) == 1 and err[0].startswith("advkd: warning:") and flag in err[0] and "continuing without it" in err[0]
    assert meta["fast_paths"][switch] is False  # the record says what really ran
    for k in plain:  # the trial step leaves parameters and BN statistics as they were: the plain run exactly
        assert torch.equal(plain[k], weights[k]), k


def test_working_switches_stay_on_and_the_trial_changes_nothing(tmp_path, monkeypatch):
    weights, meta = _train(tmp_path, "cl", FastPaths(channels_last=True))
    assert meta["fast_paths"]["channels_last"] is True
    monkeypatch.setattr(accel, "_trial_step", lambda *a, **k: None)
    untried, _ = _train(tmp_path, "cl-untried", FastPaths(channels_last=True))
    for k in weights:  # parameters and BN statistics restored after the trial: bitwise the run without it
        assert torch.equal(weights[k], untried[k]), k


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    import advkd.report.driver as reporting

    def interrupt(*a, **k):
        raise Interrupted()

    monkeypatch.setattr(reporting, "run_report", interrupt)
    assert main(["report", "table2"]) == 130
    assert capsys.readouterr().err.strip() == "advkd: interrupted"
    line = interrupted_line(["distill", "--method", "rslad", "--student", "resnet18", "--name", "a b"])
    assert line.endswith("resume with advkd distill --method rslad --student resnet18 --name 'a b' --resume")
    assert interrupted_line(["pretrain-teacher", "--arch", "x", "--resume"]).endswith("--arch x --resume")


def test_a_keyboard_interrupt_inside_a_command_is_not_silent(monkeypatch, capsys):
    import advkd.report.driver as reporting

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(reporting, "run_report", interrupt)
    assert main(["report", "table2"]) == 130
    assert capsys.readouterr().err.strip() == "advkd: interrupted"


# ----------------------------------------------------------------------------- operating-system errors


def test_os_errors_become_one_line_with_the_path_and_the_fix(monkeypatch, capsys):
    import advkd.report.driver as reporting

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/results.jsonl")

    monkeypatch.setattr(reporting, "run_report", full_disk)
    assert main(["report", "table2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/runs/results.jsonl" in err[0] and "disk is full" in err[0]


def test_safetensors_io_errors_are_recognised():
    class SafetensorError(Exception):
        pass

    text = describe(SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left\" })"))
    assert "disk is full" in text


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_finds_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(AdvkdError, match="not writable"):
        check_writable(ro / "runs")


def test_attack_on_a_read_only_runs_dir_stops_before_attacking(tmp_path, monkeypatch, capsys):
    """As root every folder is writable, so the read-only folder is simulated through os.access."""
    import advkd.core.oserrors as oserrors

    summary = run(tiny("ro"), runs_dir=tmp_path / "train", data_dir=tmp_path, device=CPU, reporter=Reporter(enabled=False))
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(oserrors.os, "access", lambda path, mode: Path(path) != runs)
    import advkd.evaluation.driver as attacking

    def no_attacks(*a, **k):
        raise AssertionError("the attacks ran before the write check")

    monkeypatch.setattr(attacking, "evaluate", no_attacks)
    assert main(["attack", str(summary.path / "best.safetensors"), "--runs-dir", str(runs), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[-1] and str(runs) in err[-1]


def test_check_writable_finds_a_file_in_the_way_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdvkdError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "runs")
    check_writable(tmp_path / "new" / "runs")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- sloppy inputs refused early


def test_eps_with_two_slashes_is_refused():
    with pytest.raises(AdvkdError, match="not a number or fraction"):
        parse_eps("8/255/3")
    assert parse_eps("8/255").value == 8 / 255


def test_empty_attack_list_and_negative_plan_size_are_refused(tmp_path, capsys):
    env = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path)]
    assert main(["attack", "missing.safetensors", "--attacks", "", *env]) == 2
    assert "names no attack" in capsys.readouterr().err
    assert main(["report", "table2", "--plan", "--n-examples", "-5", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--n-examples must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_landscape_out_must_be_a_png_file(tmp_path, capsys):
    assert main(["landscape", "missing.safetensors", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "must be a .png, .pdf or .svg file path" in capsys.readouterr().err  # vector figures too (issue 14)
