"""Fixtures shared by several test files; the helpers behind them live in tests/tiny_nets.py."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

from tiny_nets import make_batch

# generated batteries (test_settings_schema, test_file_battery): 40 examples per test in make test,
# 1000 under HYPOTHESIS_PROFILE=slow (make test-slow)
settings.register_profile("fast", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

# Tests count stderr lines; a busy shared machine must not add the load warning to them
# (tests/test_newcomer.py tests the warning itself).
os.environ.setdefault("ADVKD_NO_LOAD_WARNING", "1")
# Training follows the idle cores (advkd.core.idle_cores): on a shared test machine the thread count
# would change mid-run and bit-exact comparisons with it; tests/test_cores.py turns it on.
os.environ.setdefault("ADVKD_FOLLOW_CORES", "0")
# Speed paths left unset are measured on the machine (advkd.core.speed_choice): timings differ run to
# run, so every test process (subprocesses too) runs the exact path, fp32 NCHW, as `--paths exact`
# does, and nothing is cached in the user's home; the tests of the measurement set ADVKD_PATHS=auto.
os.environ.setdefault("ADVKD_PATHS", "exact")
os.environ.setdefault("ADVKD_CACHE_DIR", tempfile.mkdtemp(prefix="advkd-test-cache-"))


@pytest.fixture
def batch():
    """``make_batch(0)``: six (3, 4, 4) inputs and labels, the same in every method test file."""
    return make_batch(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny nets: on a shared 2-core machine two threads only
    contend (the parity modules run ~50x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def speed_cache(tmp_path_factory, monkeypatch):
    """Where a test measures speed paths (ADVKD_PATHS=auto), it gets a cache of its own and
    measurements that time every candidate alike (so the exact path, fp32 NCHW, wins the tie);
    tests/test_speed_choice.py mocks other timings, and times candidates through ``real_measure``."""
    from advkd.core import speed_choice

    cache = tmp_path_factory.mktemp("advkd-cache")
    monkeypatch.setenv("ADVKD_CACHE_DIR", str(cache))
    monkeypatch.setattr(speed_choice, "real_measure", speed_choice.measure, raising=False)
    monkeypatch.setattr(speed_choice, "measure", lambda steps, **kw: {c: 1.0 for c in steps})
    return cache


FAKE_NET_COST = {"forward": 1e-3, "input_grad": 3e-3, "train": 4e-3, "train_input_grad": 3.5e-3, "batch": 8}


@pytest.fixture(autouse=True)
def fake_calibration(monkeypatch):
    """Plans price their commands after timing each network (``advkd.report.budget``); a paper
    plan's WRN-34-20 would take minutes on a test machine, so tests get fixed per-image costs
    (:data:`FAKE_NET_COST`). tests/test_budget.py times a real network through ``real_time_network``."""
    from advkd.report import budget

    monkeypatch.setattr(budget, "real_time_network", budget.time_network, raising=False)
    monkeypatch.setattr(budget, "time_network", lambda arch, dataset, device, paths=None: budget.NetCost(**FAKE_NET_COST))
