"""Following the idle cores (advkd.core.idle_cores): the foreign load is this machine's busy time minus
this process's own, the thread count drops at the first sample that shows foreign work and rises
only after two agreeing samples, never above the count the run started with; --threads fixes
it; and a training run really calls it between batches."""
from __future__ import annotations

import pytest
import torch
from tiny_runs import FAST

from advkd.cli import main
from advkd.core import idle_cores as cores
from advkd.core.idle_cores import IdleCores, Sample, foreign_cores, read_busy, read_own

STAT = """cpu  100 0 100 800 0 0 0 0 0 0
cpu0 50 0 50 400 10 0 0 0 0 0
cpu1 50 0 50 400 10 0 0 0 0 0
cpu2 999 0 999 0 0 0 0 0 0 0
intr 12345
"""


def test_proc_stat_and_self_stat_are_read_as_ticks():
    assert read_busy({0, 1}, STAT) == 200  # user + system of the allowed cores; idle and iowait are not busy
    assert read_busy({0, 1, 2}, STAT) == 200 + 1998
    assert read_own("1234 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 700 300 0 0") == 1000  # utime + stime, a ')' in the name
    assert read_busy({0}) >= 0 and read_own() >= 0  # this machine's files parse


def test_the_foreign_load_excludes_this_process():
    a, b = Sample(0.0, busy=0, own=0), Sample(2.0, busy=400, own=200)  # 2 s at 100 ticks/s: 4 core-s busy, 2 ours
    assert foreign_cores(a, b, hz=100) == pytest.approx(1.0)
    assert foreign_cores(a, Sample(2.0, busy=100, own=200), hz=100) == 0.0  # never negative (tick rounding)
    assert foreign_cores(a, Sample(0.0, 10, 0), hz=100) == 0.0


class FakeMachine:
    """Two cores; ``foreign`` cores of other work; this process burns ``threads`` cores."""

    def __init__(self) -> None:
        self.t, self.busy, self.own, self.threads, self.foreign = 0.0, 0, 0, 2, 0.0

    def advance(self, seconds: float) -> None:
        self.t += seconds
        ours = min(self.threads, 2 - min(self.foreign, 2)) if self.foreign else self.threads
        self.busy += int(100 * seconds * (ours + self.foreign))
        self.own += int(100 * seconds * ours)

    def sample(self) -> Sample:
        return Sample(self.t, self.busy, self.own)

    def set(self, n: int) -> None:
        self.threads = n


def governor(m: FakeMachine, **kw) -> IdleCores:
    return IdleCores(cpus={0, 1}, sample=m.sample, set_threads=m.set, get_threads=lambda: m.threads, hz=100, interval_s=2.0, **kw)


def test_threads_follow_a_foreign_busy_core_and_come_back():
    m = FakeMachine()
    g = governor(m)
    m.advance(2.5)
    assert g.follow() == "" and m.threads == 2  # quiet
    m.foreign = 1.0
    m.advance(1.0)
    assert g.follow() == ""  # within the interval: not even sampled
    m.advance(1.5)
    line = g.follow()
    assert m.threads == 1 and "advkd now runs 1 thread (was 2" in line and "--threads N fixes the count" in line
    m.foreign = 0.0
    m.advance(2.5)
    assert g.follow() == "" and m.threads == 1  # one quiet sample: could be a pause
    m.advance(2.5)
    assert "now runs 2 threads" in g.follow() and m.threads == 2 and g.changes == 2


@pytest.mark.parametrize("foreign, threads", [(0.0, 2), (0.3, 2), (0.7, 1), (1.0, 1), (1.8, 1), (2.0, 1)])
def test_the_count_is_the_idle_cores_rounded_at_least_one(foreign, threads):
    g = governor(FakeMachine())
    assert g.target(foreign) == threads


def test_never_more_threads_than_the_run_started_with():
    m = FakeMachine()
    m.threads = 1
    g = governor(m)
    assert g.ceiling == 1 and g.target(0.0) == 1
    for _ in range(3):
        m.advance(2.5)
        assert g.follow() == "" and m.threads == 1


def test_threads_given_turn_it_off(monkeypatch):
    monkeypatch.setenv("ADVKD_FOLLOW_CORES", "1")
    monkeypatch.setattr(cores, "_FIXED", False)
    assert cores.enabled()
    monkeypatch.setenv("ADVKD_FOLLOW_CORES", "0")
    assert not cores.enabled()
    monkeypatch.setenv("ADVKD_FOLLOW_CORES", "1")
    from advkd.core.accel import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(before)
        assert not cores.enabled()
    finally:
        torch.set_num_threads(before)


def test_a_training_run_follows_between_batches_and_restores_the_count(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_FOLLOW_CORES", "1")
    monkeypatch.setattr(cores, "_FIXED", False)
    calls = []

    class Spy(IdleCores):
        def follow(self) -> str:
            calls.append(torch.get_num_threads())
            if len(calls) == 1 and self.ceiling > 1:
                self._set(1)
                return "other processes use 1.0 of the 2 cores: advkd now runs 1 thread (was 2; --threads N fixes the count)"
            return ""

    monkeypatch.setattr(cores, "IdleCores", Spy)
    before = torch.get_num_threads()
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]) == 0
    assert len(calls) == 2  # 64 images, batch 32: after each batch
    assert torch.get_num_threads() == before  # the run's count is restored at its end
    if before > 1:
        assert "advkd now runs 1 thread" in capsys.readouterr().err
