"""Progress inside AutoAttack's stages, without touching the library's loop.

pyautoattack runs a stage as one call that can take minutes on a CPU. The model handed to the
library is wrapped in :class:`PassMeter`, which counts the images the library forwards through
it: the same function on the same inputs, so flags, adversarial examples and random draws are
unchanged. A stage's most forwards per point follow from the library's own settings
(:func:`stage_forwards`; pyautoattack 0.2.0, checked on a model no stage can fool, where every
point takes the full budget). Points the stage breaks drop out early, so the count is an upper
bound and so is the time left derived from it (APGD-CE attacks every point to the end: exact).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from advkd.core.progress import duration_text

CHECK_FORWARDS = 7  # the library's checks before each call: 5 randomness passes, range, dynamic (of one batch)


class PassMeter(nn.Module):
    """``model`` unchanged, counting the images forwarded; ``on_forward`` runs after each pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0
        self.on_forward: Callable[[], None] | None = None

    def forward(self, x: Tensor) -> Any:
        out = self.model(x)
        self.images += int(x.shape[0])
        if self.on_forward is not None:
            self.on_forward()
        return out


def _apgd_run(apgd: Any) -> int:
    """Forwards per point of one APGD run: the start and every iteration (x EOT), then its check."""
    return (apgd.n_iter + 1) * apgd.eot_iter + 1


def _fab_run(fab: Any) -> int:
    """Forwards per point of one FAB run: two per iteration (gradient, then label), three around them."""
    return 2 * fab.n_iter + 3


def per_point_forwards(adversary: Any, stage: str) -> int:
    """The most images one point costs in ``stage`` (``adversary``: a ``pyautoattack.AutoAttack``),
    counting the stage's own clean pass and the library's pass on its output."""
    if stage in ("apgd-ce", "apgd-dlr"):
        return adversary.apgd.n_restarts * _apgd_run(adversary.apgd) + 2
    if stage == "apgd-t":
        t = adversary.apgd_targeted
        return t.n_target_classes * t.n_restarts * _apgd_run(t) + 3
    if stage == "fab":
        return adversary.fab.n_restarts * _fab_run(adversary.fab) + 3
    if stage == "fab-t":  # the library sets fab.n_restarts = 1 for FAB-T
        return adversary.fab.n_target_classes * _fab_run(adversary.fab) + 3
    if stage == "square":
        return adversary.square.n_restarts * (adversary.square.n_queries + 4) + 1
    raise ValueError(f"unknown AutoAttack stage {stage!r}")


def stage_forwards(adversary: Any, stage: str, points: int, batch_size: int) -> int:
    """The most images one library call of ``stage`` forwards for ``points`` robust points,
    the library's checks on the first batch included."""
    checks = (2 if adversary.version == "rand" else CHECK_FORWARDS) * min(points, batch_size)
    return points * per_point_forwards(adversary, stage) + checks


class StageProgress:
    """One line at most every ``every_s`` seconds while a stage runs: forwards done of the most the
    stage can take, and at that rate the most time left."""

    def __init__(self, meter: PassMeter, stage: str, total: int, log: Callable[[str], None], every_s: float) -> None:
        self.meter, self.stage, self.total, self.log, self.every_s = meter, stage, total, log, every_s
        self.first = meter.images
        self.started = self.last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        done, elapsed = self.meter.images - self.first, now - self.started
        left = elapsed / done * max(self.total - done, 0) if done else 0.0
        self.log(f"{self.stage}: {done} of at most {self.total} image passes ({100 * min(done / max(self.total, 1), 1):.0f}%) "
                 f"in {duration_text(elapsed)}, at most {duration_text(left)} left")
