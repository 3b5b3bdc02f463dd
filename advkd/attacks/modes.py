"""Explicit train/eval switching for attack generation.

Which BatchNorm mode an inner maximisation runs in is part of each method's definition
(single-teacher spec §5 pitfall 5, multi-teacher spec §12 pitfall 10): AdaAD, TRADES, RSLAD,
MTARD... attack in ``eval()``, official ARD / IAD / Fair-ARD in ``train()``, and evaluation
always in ``eval()``. So nothing in :mod:`advkd.attacks.engine` touches modes; callers say what
they want with :func:`training_mode`, which puts every submodule back exactly as it was.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def training_mode(*modules: nn.Module | None, train: bool) -> Iterator[None]:
    """Set ``modules`` (recursively) to train (``train=True``) or eval mode for the block.

    On exit, normal or by exception, every submodule gets back its *own* original
    ``training`` flag, so mixed states (e.g. ``model.train()`` with one BN frozen in eval)
    survive unchanged. ``None`` entries are skipped so optional teachers can be passed as-is.
    """
    present = [m for m in modules if m is not None]
    saved = [(sub, sub.training) for m in present for sub in m.modules()]
    try:
        for m in present:
            m.train(train)
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag
