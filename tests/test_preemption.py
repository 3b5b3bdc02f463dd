"""Preemption (issue 25): SIGTERM / SIGUSR1 finish the current batch, write a mid-epoch resume
state and stop with exit 75; ``--resume`` continues bit-exactly, wherever the signal landed;
``--checkpoint-every`` writes the same state without stopping."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_runs import CPU, Capture, metrics_without_time, same_weights, tiny_cfg

from advkd.core.preempt import EXIT_PREEMPTED, STOP, Preempted, parse_duration
from advkd.training import loop
from advkd.training.resume import load_resume, resumable_state

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = {"epochs": 3, "milestones": [2], "kind": "distill", "method": "rslad"}  # 3 batches an epoch; a teacher in the loop


@contextlib.contextmanager
def one_thread_here():
    """Module fixtures run before the tests' one_thread fixture: the same thread count for both
    sides of a bit-exact comparison (it changes the order of float reductions)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    with one_thread_here():
        summary = loop.run(tiny_cfg(epochs=1, name="teacher"), runs_dir=root, data_dir=root, device=CPU, reporter=Capture())
    return str(summary.path / "best.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, teacher):
    root = tmp_path_factory.mktemp("full")
    with one_thread_here():
        return loop.run(tiny_cfg(**CFG, teachers={"teacher": teacher}), runs_dir=root, data_dir=root, device=CPU, reporter=Capture()).path


def _count_calls(target, n: int):
    """Wrap ``target`` so that its ``n``-th call requests a stop (what the signal handler does)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            STOP.request("SIGTERM")
        return target(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def _autocast_hook(n: int):
    real = loop.autocast
    calls = {"n": 0}

    @contextlib.contextmanager
    def hooked(*args, **kwargs):
        with real(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:  # inside the forwards of batch n: the inner maximisation runs here
                STOP.request("SIGUSR1")
            yield

    loop.autocast = hooked
    try:
        yield
    finally:
        loop.autocast = real


def _stop_in_optimizer_step(monkeypatch, n: int):
    real = loop.make_optimizer

    def make(cfg, model):
        opt = real(cfg, model)
        opt.step = _count_calls(opt.step, n)  # between this step and the next batch
        return opt

    monkeypatch.setattr(loop, "make_optimizer", make)


POINTS = {
    # where the signal lands: (how, expected "where" of the stop)
    "inner-maximisation-epoch-1": ("autocast", 2, "batch 2 of epoch 1 is saved"),
    "inner-maximisation-epoch-2": ("autocast", 5, "batch 2 of epoch 2 is saved"),
    "after-optimizer-step": ("step", 7, "batch 1 of epoch 3 is saved"),
    "during-evaluation": ("evaluate_epoch", 2, "epoch 2 is committed"),
    "during-checkpoint-write": ("save_checkpoint", 1, "epoch 1 is committed"),
}


@pytest.mark.parametrize("point", POINTS)
def test_a_stop_anywhere_resumes_bit_exactly(point, teacher, uninterrupted, tmp_path, monkeypatch):
    how, n, where = POINTS[point]
    cfg = tiny_cfg(**CFG, teachers={"teacher": teacher})
    hooks = contextlib.nullcontext()
    if how == "autocast":
        hooks = _autocast_hook(n)
    elif how == "step":
        _stop_in_optimizer_step(monkeypatch, n)
    else:
        monkeypatch.setattr(loop, how, _count_calls(getattr(loop, how), n))
    with hooks, pytest.raises(Preempted) as stopped:
        loop.run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    assert stopped.value.where == where
    monkeypatch.undo()
    path = tmp_path / "distill" / "synthetic" / uninterrupted.name
    state = resumable_state(path)  # the stop left a resumable run, whatever the point
    assert state is not None and bool(state.partial) == ("batch" in where)
    assert not list(path.glob(".*.tmp"))  # nothing torn
    torch.manual_seed(999)  # a new process starts from arbitrary RNG state
    log = Capture()
    loop.run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=log, resume=True)
    assert any(f"resuming {path} after {where.split(' is ')[0]}" in line for line in log.lines), log.lines[:3]
    assert same_weights(uninterrupted / "last.safetensors", path / "last.safetensors")
    assert same_weights(uninterrupted / "best.safetensors", path / "best.safetensors")
    assert metrics_without_time(uninterrupted / "metrics.jsonl") == metrics_without_time(path / "metrics.jsonl")
    assert load_resume(path / "resume.safetensors").partial is None  # the finished run ends on an epoch's commit


def test_periodic_checkpoints_do_not_change_the_run_and_a_crash_resumes_from_the_last(teacher, uninterrupted, tmp_path, monkeypatch):
    cfg = tiny_cfg(**CFG, teachers={"teacher": teacher}, checkpoint_every="0.001s")  # due after every batch
    crash = {"n": 0}
    real = loop.save_resume

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        if kwargs.get("partial") and kwargs["partial"]["step"] == 2 and args[3] == 1:  # epoch 2, batch 2 saved
            raise KeyboardInterrupt  # the process dies right after a periodic save (as SIGKILL would)

    monkeypatch.setattr(loop, "save_resume", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        loop.run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    monkeypatch.undo()
    path = tmp_path / "distill" / "synthetic" / uninterrupted.name
    assert load_resume(path / "resume.safetensors").partial["step"] == 2
    log = Capture()
    loop.run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=log, resume=True)
    assert any("after batch 2 of epoch 2" in line for line in log.lines)
    assert same_weights(uninterrupted / "last.safetensors", path / "last.safetensors")
    assert metrics_without_time(uninterrupted / "metrics.jsonl") == metrics_without_time(path / "metrics.jsonl")
    assert crash["n"] == 0


@pytest.mark.parametrize("text,seconds", [("10m", 600), ("90s", 90), ("1.5h", 5400), ("600", 600), ("", 0), ("off", 0), (0, 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "-5m", "5x", "inf"])
def test_bad_durations_are_one_line(bad):
    from advkd.core.errors import AdvkdError

    with pytest.raises(AdvkdError, match="duration"):
        parse_duration(bad)


SCRIPT = """
import sys
from advkd.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_a_real_signal_stops_with_exit_75_and_the_resume_line_then_resumes_exactly(sig, tmp_path):
    """The CLI in its own process, signalled while it trains (after epoch 1 is on disk)."""
    args = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", "--dataset", "synthetic", "--epochs", "4",
            "--train-subset", "1024", "--batch-size", "16", "--n-examples", "16", "--set", "method.steps=3"]
    env = {**os.environ, "ADVKD_RUNS_DIR": str(tmp_path / "full"), "ADVKD_THREADS": "1"}
    assert subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, timeout=600).returncode == 0
    env["ADVKD_RUNS_DIR"] = str(tmp_path / "stopped")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, stderr=subprocess.PIPE, text=True)
    def first_epoch_on_disk() -> bool:
        metrics = next((tmp_path / "stopped").rglob("metrics.jsonl"), None)
        return metrics is not None and bool(metrics.read_text().strip())

    deadline = time.monotonic() + 300
    while not first_epoch_on_disk() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived (a very fast machine)")
    assert proc.returncode == EXIT_PREEMPTED, err[-500:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"advkd: stopped by {sig}; ") and last.endswith("--resume"), last
    assert subprocess.run([sys.executable, "-c", SCRIPT, *args, "--resume"], env=env, capture_output=True, timeout=600).returncode == 0
    (full,) = (tmp_path / "full").rglob("last.safetensors")
    (resumed,) = (tmp_path / "stopped").rglob("last.safetensors")
    assert full.relative_to(tmp_path / "full") == resumed.relative_to(tmp_path / "stopped")
    assert same_weights(full, resumed)


# ----------------------------------------------------------------------------- attacks

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from test_bad_inputs import PT

    from advkd.cli import main

    runs = tmp_path_factory.mktemp("ckpt") / "runs"
    assert main([*PT, "--runs-dir", str(runs), "--name", "c"]) == 0
    return runs / "pretrain-teacher" / "synthetic" / "c" / "best.safetensors"


def test_a_stopped_suite_keeps_its_finished_attacks_and_a_rerun_equals_an_uninterrupted_one(checkpoint, tmp_path, monkeypatch, capsys):
    from advkd.cli import main
    from advkd.evaluation import evaluate as evaluation
    from advkd.evaluation.records import read_records

    args = ["attack", str(checkpoint), "--attacks", "pgd20-trades,pgd20-sat", "--n-examples", "32", "--batch-size", "16"]  # both draw random starts
    assert main([*args, "--runs-dir", str(tmp_path / "a")]) == 0
    real = evaluation._attack_points
    calls = {"n": 0}

    def stopped_in_the_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Preempted("SIGTERM", "finished attacks are kept")  # what the handler raises mid-attack
        return real(*a, **k)

    monkeypatch.setattr(evaluation, "_attack_points", stopped_in_the_second)
    capsys.readouterr()
    assert main([*args, "--runs-dir", str(tmp_path / "b")]) == EXIT_PREEMPTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "advkd: stopped by SIGTERM; finished attacks are kept: rerun the same command to continue"
    assert read_records(tmp_path / "b" / "results.jsonl") == []  # no record of a suite that did not finish
    monkeypatch.undo()
    assert main([*args, "--runs-dir", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "pgd20-trades: kept from the interrupted run" in err and "pgd20-sat: kept" not in err
    a = {r["attack"]: r for r in read_records(tmp_path / "a" / "results.jsonl")}
    b = {r["attack"]: r for r in read_records(tmp_path / "b" / "results.jsonl")}
    assert a.keys() == b.keys() == {"clean", "pgd20-trades", "pgd20-sat"}
    for attack in a:  # the same examples broken, the second attack's random starts included
        assert (a[attack]["robust_flags"], a[attack]["accuracy"]) == (b[attack]["robust_flags"], b[attack]["accuracy"]), attack
    assert not list((tmp_path / "b" / "attack-state").glob("*"))  # a finished suite leaves no state


def test_a_kept_attack_is_not_reused_for_another_command(checkpoint, tmp_path, monkeypatch, capsys):
    from advkd.cli import main
    from advkd.evaluation import evaluate as evaluation

    base = ["attack", str(checkpoint), "--n-examples", "32", "--batch-size", "16", "--runs-dir", str(tmp_path)]
    real = evaluation._attack_points
    calls = {"n": 0}

    def stop_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Preempted("SIGTERM", "finished attacks are kept")
        return real(*a, **k)

    monkeypatch.setattr(evaluation, "_attack_points", stop_second)
    assert main([*base, "--attacks", "pgd20-trades,pgd20-sat"]) == EXIT_PREEMPTED
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*base, "--attacks", "pgd20-trades,pgd20-sat", "--seed", "5"]) == 0  # another seed: attack again
    assert "kept from the interrupted run" not in capsys.readouterr().err


def test_a_full_disk_during_a_mid_epoch_save_keeps_the_committed_state_and_says_what_was_needed(teacher, tmp_path, monkeypatch, capsys):
    from advkd.cli import main
    from advkd.core import files

    args = ["distill", "--method", "rslad", "--student", "tinycnn", "--teacher", teacher, "--dataset", "synthetic", "--train-subset", "96",
            "--batch-size", "32", "--n-examples", "32", "--set", "method.steps=2", "--runs-dir", str(tmp_path), "--name", "r"]
    assert main([*args, "--epochs", "1"]) == 0
    state = tmp_path / "distill" / "synthetic" / "r" / "resume.safetensors"
    before = state.read_bytes()
    real = files.save_tensors

    def part_then_full(f) -> None:
        f.write(b"\0" * 100)  # part of the file reached the disk
        raise OSError(28, "No space left on device")

    def full_disk(path, tensors, metadata=None, *, size=None):
        if "resume" in str(path):
            return files.atomic_write_with(path, part_then_full, size=size)
        return real(path, tensors, metadata, size=size)

    monkeypatch.setattr(files, "save_tensors", full_disk)
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume", "--checkpoint-every", "0.001s"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("advkd: error: operating-system error at ") and "resume.safetensors" in error
    assert "No space left on device (the file needs about" in error and "free in" in error
    assert state.read_bytes() == before and resumable_state(state.parent).epoch == 1  # the committed state, whole
    assert not list(state.parent.glob(".*.tmp"))


def test_the_stop_line_names_the_resume_command_when_global_options_come_first():
    from advkd.argv import interrupted_line, preempted_line
    from advkd.cli import root_command

    args = ["--runs-dir", "runs", "distill", "--method", "rslad"]
    assert preempted_line(args, Preempted("SIGTERM", "batch 3 of epoch 1 is saved"), root_command()) == \
        "advkd: stopped by SIGTERM; batch 3 of epoch 1 is saved: resume with advkd --runs-dir runs distill --method rslad --resume"
    assert interrupted_line(args, root_command()).endswith("--runs-dir runs distill --method rslad --resume")
    from advkd.argv import subcommand

    assert subcommand(["--runs-dir", "distill", "attack", "x.safetensors"], root_command()) == "attack"  # a value is not the command
