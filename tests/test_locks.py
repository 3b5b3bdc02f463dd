"""The run-dir lock (one trainer per run dir; a killed holder never blocks a rerun) and the
results.jsonl append lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from tiny_runs import CPU, Capture, tiny_cfg

from advkd.core.errors import AdvkdError
from advkd.core.locks import LOCK_FILE, RunLock
from advkd.core.runs import find_runs
from advkd.evaluation.records import append_records, read_records
from advkd.training.loop import run
from advkd.training.resume import resumable_state

HOLD_RUN_LOCK = "import sys, time; from advkd.core.locks import RunLock; lock = RunLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)"


def holder(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_being_trained_refuses_a_second_trainer_and_a_killed_holder_blocks_nothing(tmp_path):
    path = tmp_path / "pretrain-teacher" / "synthetic" / "tinycnn-pgd-at-s7"
    run(tiny_cfg(epochs=1), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    proc = holder(HOLD_RUN_LOCK, str(path))
    try:
        for resume in (False, True):  # a second run of the same name, and --resume of a run still training
            with pytest.raises(AdvkdError, match=rf"run .*tinycnn-pgd-at-s7 is being trained by process {proc.pid}; wait for it or use name=\.\.\."):
                run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=resume, reporter=Capture())
        assert resumable_state(path).epoch == 1  # the refused runs touched nothing
        assert [r.path for r in find_runs(tmp_path)] == [path] and find_runs(tmp_path)[0].complete  # the lock file hides nowhere
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (path / LOCK_FILE).exists()  # stale lock file, but nobody holds the lock
    summary = run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=Capture())
    assert summary.epochs_run == 1 and not (path / LOCK_FILE).exists()


def test_lock_is_exclusive_within_a_process_and_its_file_goes_with_it(tmp_path):
    lock = RunLock.acquire(tmp_path / "r")
    with pytest.raises(AdvkdError, match=f"being trained by process {os.getpid()}"):
        RunLock.acquire(tmp_path / "r")
    lock.release()
    with RunLock.acquire(tmp_path / "r"):  # free again once released; the file is removed with it
        assert (tmp_path / "r" / LOCK_FILE).read_text() == str(os.getpid())
    assert not (tmp_path / "r" / LOCK_FILE).exists()


HOLD_RESULTS_LOCK = """
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
f.write("holder\\n"); f.flush()
"""


def test_results_append_waits_for_the_lock(tmp_path):
    path = tmp_path / "results.jsonl"
    proc = holder(HOLD_RESULTS_LOCK, str(path))
    rec = {"attack": "pgd10", "accuracy": 20.0, "checkpoint": "a.safetensors"}
    writer = threading.Thread(target=append_records, args=(path, [rec]))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive() and path.read_text() == ""  # blocked while another process appends
    proc.stdin.write("go\n")
    proc.stdin.close()
    proc.wait()
    writer.join(timeout=30)
    assert path.read_text().splitlines() == ["holder", json.dumps(rec, sort_keys=True)]


APPENDER = """
import sys
from advkd.evaluation.records import append_records
for i in range(10):
    append_records(sys.argv[1], [{"checkpoint": "c", "attack": "pgd10", "accuracy": 1.0, "writer": int(sys.argv[2]), "i": i, "flags": "x" * 200_000}])
"""


def test_concurrent_appends_lose_no_record(tmp_path):
    path = tmp_path / "results.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(w)]) for w in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    records = read_records(path)
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(3) for i in range(10)]
    assert len(path.read_text().splitlines()) == 30  # no torn line either


# ----------------------------------------------------------------------------- failures while taking the lock

import errno as _errno  # noqa: E402

from advkd.core import locks as _locks  # noqa: E402
from advkd.core.errors import AdvkdError as _AdvkdError  # noqa: E402


@pytest.mark.parametrize("failure", ["write", "flush", "open", "truncate", "flock"])
def test_a_failure_while_taking_the_lock_removes_what_it_made_and_names_the_file(tmp_path, monkeypatch, failure):
    run = tmp_path / "runs" / "distill" / "synthetic" / "r"
    real_open = _locks._open_lock_file

    class Full:
        def __init__(self, handle):
            self._h = handle

        def __getattr__(self, name):
            attr = getattr(self._h, name)
            if name == failure:
                def broken(*a, **k):
                    raise OSError(_errno.ENOSPC, "No space left on device")
                return broken
            return attr

    if failure == "open":
        monkeypatch.setattr(_locks, "_open_lock_file", lambda p: (_ for _ in ()).throw(OSError(_errno.ENOSPC, "No space left on device")))
    elif failure == "flock":
        monkeypatch.setattr(_locks.fcntl, "flock", lambda *a: (_ for _ in ()).throw(OSError(_errno.ENOLCK, "No locks available")))
    else:
        monkeypatch.setattr(_locks, "_open_lock_file", lambda p: Full(real_open(p)))
    with pytest.raises(_AdvkdError, match=r"cannot take the run lock .*r/\.lock: No (space left on device|locks available); nothing was left behind"):
        _locks.RunLock.acquire(run)
    assert not (tmp_path / "runs").exists()  # every folder it made is gone, no empty .lock


@pytest.mark.parametrize("target", ["dangling", "existing"])
def test_a_symlink_at_the_lock_file_is_refused_and_its_target_untouched(tmp_path, target):
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.txt"
    if target == "existing":
        outside.write_text("precious")
    (run / _locks.LOCK_FILE).symlink_to(outside)
    with pytest.raises(_AdvkdError, match="lock is a symlink"):
        _locks.RunLock.acquire(run)
    assert (outside.read_text() == "precious") if target == "existing" else not outside.exists()
    assert (run / _locks.LOCK_FILE).is_symlink()  # not ours to remove
