"""Commit, then forget: a finished attack suite's records are durably in the store before its kept
state is removed, and a stop signal during the append waits for it; the store and the
attack-state folder are checked before the first attack; and a stop signal anywhere in a command
(data loading, setup) ends with exit 75 and its one line, never a silent 143.

Signals are real: the process sends SIGTERM to itself at the point under test."""
from __future__ import annotations

import os
import signal

import pytest
from test_bad_inputs import PT, refused_line

from advkd.cli import main
from advkd.core.preempt import EXIT_PREEMPTED
from advkd.evaluation import driver
from advkd.evaluation import evaluate as evaluation
from advkd.evaluation.records import read_records

pytestmark = pytest.mark.usefixtures("one_thread")
ATTACKS = ["--attacks", "clean,pgd10", "--n-examples", "16", "--batch-size", "8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ckpt") / "runs"
    assert main([*PT, "--runs-dir", str(runs), "--name", "c"]) == 0
    return runs / "pretrain-teacher" / "synthetic" / "c" / "best.safetensors"


def _attack(checkpoint, runs):
    return ["attack", str(checkpoint), *ATTACKS, "--runs-dir", str(runs)]


def _kept(runs):
    return [p for p in (runs / "attack-state").glob("*/*")] if (runs / "attack-state").exists() else []


def test_a_stop_during_the_append_waits_for_it_and_the_results_are_recorded(checkpoint, tmp_path, monkeypatch, capsys):
    real = driver.append_records

    def signalled(store, records):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the append runs
        real(store, records)

    monkeypatch.setattr(driver, "append_records", signalled)
    assert main(_attack(checkpoint, tmp_path)) == 0  # the last write completed: nothing left to stop
    assert {r["attack"] for r in read_records(tmp_path / "results.jsonl")} == {"clean", "pgd10"}
    assert not _kept(tmp_path)


@pytest.mark.parametrize("failure", ["sigterm-before-append", "sigusr1-before-append", "full-disk", "lock-timeout", "read-only-store"])
def test_a_suite_whose_records_did_not_land_keeps_its_state_and_a_rerun_records_without_attacking(checkpoint, tmp_path, monkeypatch,
                                                                                                 capsys, failure):
    from advkd.core.errors import AdvkdError

    if failure.endswith("before-append"):  # between the last attack and the append: the window that lost results before
        real_flags = driver.outcome_flags
        sig = signal.SIGTERM if failure.startswith("sigterm") else signal.SIGUSR1

        def signalled(*a, **k):
            os.kill(os.getpid(), sig)
            return real_flags(*a, **k)

        monkeypatch.setattr(driver, "outcome_flags", signalled)
    else:
        errors = {"full-disk": OSError(28, "No space left on device"), "lock-timeout": AdvkdError("the store is locked by another process"),
                  "read-only-store": OSError(30, "Read-only file system")}

        def failing(store, records):
            raise errors[failure]

        monkeypatch.setattr(driver, "append_records", failing)
    rc = main(_attack(checkpoint, tmp_path))
    assert rc == (EXIT_PREEMPTED if "before" in failure else 2)
    assert read_records(tmp_path / "results.jsonl") == [] and _kept(tmp_path)  # nothing recorded, the results kept
    monkeypatch.undo()
    attacked = []
    real = evaluation._attack_points
    monkeypatch.setattr(evaluation, "_attack_points", lambda *a, **k: (attacked.append(1), real(*a, **k))[1])
    capsys.readouterr()
    assert main(_attack(checkpoint, tmp_path)) == 0
    assert not attacked and "kept from the interrupted run" in capsys.readouterr().err  # appended, not attacked again
    assert {r["attack"] for r in read_records(tmp_path / "results.jsonl")} == {"clean", "pgd10"} and not _kept(tmp_path)


@pytest.mark.parametrize("where", ["store-is-a-folder", "store-unreadable", "state-root-is-a-file", "state-dir-is-a-file",
                                   "store-parent-is-a-file"])
def test_a_store_or_state_folder_that_cannot_take_the_results_is_refused_before_any_attack(checkpoint, tmp_path, monkeypatch,
                                                                                          capsys, where):
    runs = tmp_path / "runs"
    runs.mkdir()
    if where == "store-is-a-folder":
        (runs / "results.jsonl").mkdir()
    elif where == "store-unreadable":
        (runs / "results.jsonl").write_text("")
        (runs / "results.jsonl").chmod(0o200)
        if os.access(runs / "results.jsonl", os.R_OK):
            pytest.skip("running as a user who reads anything (root)")
    elif where == "state-root-is-a-file":
        (runs / "attack-state").write_text("")
    elif where == "state-dir-is-a-file":
        (runs / "attack-state").mkdir()
        monkeypatch.setattr(driver, "check_inside", lambda p, root, what="": (p.write_text("") if what == "attack state dir" else None) or p)
    else:
        runs.rmdir()
        runs.write_text("")  # the runs dir itself a file
    attacked = []
    monkeypatch.setattr(evaluation, "_attack_points", lambda *a, **k: attacked.append(1))
    line = refused_line(where, _attack(checkpoint, runs), capsys)
    assert not attacked and ("record store" in line or "attack state folder" in line or "--runs-dir" in line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
@pytest.mark.parametrize("command", ["train", "attack"])
def test_a_stop_while_the_data_loads_ends_with_exit_75_and_its_line(checkpoint, tmp_path, monkeypatch, capsys, sig, command):
    import advkd.evaluation.driver as drv
    import advkd.training.loop as loop

    for module in (loop, drv):
        real = module.load_split

        def signalled(*a, _real=real, **k):
            os.kill(os.getpid(), sig)
            return _real(*a, **k)

        monkeypatch.setattr(module, "load_split", signalled)
    args = [*PT, "--runs-dir", str(tmp_path), "--name", "s"] if command == "train" else _attack(checkpoint, tmp_path)
    assert main(args) == EXIT_PREEMPTED
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"advkd: stopped by {signal.Signals(sig).name}; it stopped before its work began")
    assert not (tmp_path / "pretrain-teacher" / "synthetic" / "s").exists()  # nothing half-made
    assert read_records(tmp_path / "results.jsonl") == []
