"""SIGKILL at every point of an epoch's save sequence leaves a run dir that a rerun with
``--resume`` finishes into exactly the uninterrupted run's result: either resumable (the
killed epoch's commit point was reached or an earlier epoch's stands) or, for a first epoch
killed before its commit, cleared and restarted. Never stuck, never a stray temp file.

The save sequence of ``_commit_epoch``: metrics.jsonl, last.safetensors, best.safetensors (when
best), epoch-NNN (with save_every), resume.safetensors (the commit point). Each kill runs in a
subprocess (tests/kill_worker.py), all of them at once to keep the module short.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import CPU, Capture, metrics_without_time, same_weights, tiny_cfg

from advkd.core.locks import LOCK_FILE
from advkd.training.loop import run
from advkd.training.resume import resumable_state

# the worker trains with one thread; reruns here must too, or float sums may be ordered differently
pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).with_name("kill_worker.py")
RUN = Path("pretrain-teacher") / "synthetic" / "tinycnn-pgd-at-s7"
POINTS = ["after:metrics.jsonl", "before:last.safetensors", "after:last.safetensors", "before:resume.safetensors", "after:resume.safetensors"]
CASES = [(p, e) for e in (1, 2) for p in POINTS]


def case_id(point: str, epoch: int) -> str:
    return f"{point.replace(':', '-').replace('.', '_')}-epoch{epoch}"


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """The uninterrupted run ("reference") and every kill case, one forked child each of one
    worker: case id -> (runs dir, signal)."""
    cases = {case_id(p, e): (p, e) for p, e in CASES}
    cases["plain-rerun"] = ("before:resume.safetensors", 1)
    roots = {key: tmp_path_factory.mktemp(key) for key in cases}
    roots["reference"] = tmp_path_factory.mktemp("reference")
    argv = [str(roots["reference"])] + [a for key, (p, e) in cases.items() for a in (str(roots[key]), p, str(e))]
    proc = subprocess.run([sys.executable, str(WORKER), *argv], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = [int(line) for line in proc.stdout.split()]
    assert len(codes) == len(cases), proc.stderr[-3000:]
    out = {key: (roots[key], code) for key, code in zip(cases, codes)}
    out["reference"] = (roots["reference"], 0)
    return out


@pytest.fixture(scope="module")
def reference(killed) -> Path:
    return killed["reference"][0] / RUN


@pytest.mark.parametrize("point,epoch", CASES, ids=[case_id(p, e) for p, e in CASES])
def test_killed_save_is_resumable_or_restartable_to_the_uninterrupted_result(killed, reference, point, epoch):
    root, code = killed[case_id(point, epoch)]
    assert code == signal.SIGKILL, f"the kill point was not reached ({code})"
    path = root / RUN
    committed = epoch if point == "after:resume.safetensors" else epoch - 1  # the resume state is the commit point
    state = resumable_state(path)  # never raises: a kill never leaves a dir that needs a hand
    assert (state.epoch if state else 0) == committed
    reporter = Capture()
    summary = run(tiny_cfg(), runs_dir=root, data_dir=root, device=CPU, resume=True, reporter=reporter)
    assert summary.epochs_run == 2 - committed
    if committed == 0:
        assert any("first epoch never completed" in line for line in reporter.lines), reporter.lines
    for name in ("last.safetensors", "best.safetensors"):
        assert same_weights(path / name, reference / name), name
    assert metrics_without_time(path / "metrics.jsonl") == metrics_without_time(reference / "metrics.jsonl")
    assert not list(path.glob(".*.tmp")) and not (path / LOCK_FILE).exists()


def test_first_epoch_killed_mid_commit_restarts_without_resume_too(killed, reference):
    """A plain rerun (no --resume) of an interrupted first epoch clears it instead of saying
    the run already exists (the dir holds last.safetensors and a resume temp file)."""
    root, code = killed["plain-rerun"]
    path = root / RUN
    assert code == signal.SIGKILL
    reporter = Capture()
    run(tiny_cfg(epochs=1), runs_dir=root, data_dir=root, device=CPU, reporter=reporter)
    assert any("first epoch never completed" in line for line in reporter.lines)
    assert resumable_state(path).epoch == 1 and not list(path.glob(".*.tmp"))
