"""Fixtures shared by several test files; the helpers behind them live in tests/tiny_nets.py."""
from __future__ import annotations

import pytest

from tiny_nets import make_batch


@pytest.fixture
def batch():
    """``make_batch(0)``: six (3, 4, 4) inputs and labels, the same in every method test file."""
    return make_batch(0)
