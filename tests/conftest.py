"""Fixtures shared by several test files; the helpers behind them live in tests/tiny_nets.py."""
from __future__ import annotations

import os

import pytest
import torch

from tiny_nets import make_batch

# Tests count stderr lines; a busy shared machine must not add the load warning to them
# (tests/test_newcomer.py tests the warning itself).
os.environ.setdefault("ADVKD_NO_LOAD_WARNING", "1")


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


FAKE_NET_COST = {"forward": 1e-3, "input_grad": 3e-3, "train": 4e-3, "train_input_grad": 3.5e-3, "batch": 8}


@pytest.fixture(autouse=True)
def fake_calibration(monkeypatch):
    """Plans price their commands after timing each network (``advkd.report.budget``); a paper
    plan's WRN-34-20 would take minutes on a test machine, so tests get fixed per-image costs
    (:data:`FAKE_NET_COST`). tests/test_budget.py times a real network through ``real_time_network``."""
    from advkd.report import budget

    monkeypatch.setattr(budget, "real_time_network", budget.time_network, raising=False)
    monkeypatch.setattr(budget, "time_network", lambda arch, dataset, device, paths=None: budget.NetCost(**FAKE_NET_COST))
