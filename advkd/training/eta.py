"""How long a whole run will take: an estimate after its first batches and an ETA after each epoch.

Why: a paper-scale run on a CPU takes days; the user should learn that in seconds, with the
smaller presets named, not after the first epoch (which alone can take hours there).
"""
from __future__ import annotations

from advkd.core.progress import duration_text

EARLY_BATCHES = 3  # batches timed before the first whole-run estimate
LONG_S = 3600.0  # a run longer than this on a CPU at paper scale gets the smaller presets named


def early_estimate(per_batch_s: float, batches_left: int, *, device_type: str, scale: str) -> str:
    """One line after the first batches: the training time left at this rate (monitor evaluations extra)."""
    seconds = per_batch_s * batches_left
    line = (f"this run: about {duration_text(seconds)} of training at the current rate "
            f"({batches_left} batches left at {per_batch_s:.2f} s each; per-epoch evaluations extra)")
    if device_type == "cpu" and scale == "paper" and seconds > LONG_S:
        line += "; on a CPU, --preset mini (minutes) or --preset small (hours for a whole table) run the same pipeline smaller"
    return line


def run_eta(epoch_seconds: list[float], epochs_left: int) -> str:
    """``"run ETA 1h05m"`` from the mean of the epochs timed in this invocation ('' when done)."""
    if epochs_left <= 0 or not epoch_seconds:
        return ""
    return f"run ETA {duration_text(sum(epoch_seconds) / len(epoch_seconds) * epochs_left)}"
