"""How sure a difference between two sets of runs is: Welch's t-test over seeds, and a paired
bootstrap over seeds and test images.

Two questions come up when runs are set side by side. *Do two implementations of one method
differ?* Their seeds share nothing (each draws its own initialisation, data order and attack
noise), so the runs are two independent samples: :func:`welch` (Welch's unequal-variance t-test
on the per-seed accuracies; assumes each side's accuracies are roughly normal over seeds).
*Does method A beat method B?* Runs of two methods with the same seed share their data order
and student initialisation in advkd, and every run is scored on the same test images, so
:func:`paired_bootstrap` compares them pair by pair: it resamples the shared seeds and the test
images (with replacement, jointly for both methods) and reports the percentile interval of the
mean accuracy difference. It assumes the test images and the seeds are exchangeable draws;
with one shared seed it measures test-image noise only, which understates the uncertainty.
No SciPy (NumPy only): the t distribution's tail comes from the regularised incomplete beta function below.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Welch", "welch", "t_sf", "Paired", "paired_bootstrap", "mean_sd"]


def mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN with one value)."""
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    m = sum(xs) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_sf`; p in (0.5, 1))."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - t_sf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Welch:
    """``mean(a) - mean(b)``, its 95 % interval, and the two-sided p-value of no difference."""

    diff: float
    low: float
    high: float
    t: float
    df: float
    p: float

    @property
    def resolved(self) -> bool:
        return self.p < 0.05


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's t-test of ``a`` against ``b`` (at least two values each)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs two values a side, got {len(a)} and {len(b)}")
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    diff, se = ma - mb, math.sqrt(va + vb)
    if se == 0.0:
        return Welch(diff, diff, diff, math.inf if diff else 0.0, math.inf, 0.0 if diff else 1.0)
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    t = diff / se
    q = _t_quantile(0.975, df)
    return Welch(diff, diff - q * se, diff + q * se, t, df, min(1.0, 2.0 * t_sf(abs(t), df)))


@dataclass(frozen=True)
class Paired:
    """Mean accuracy difference A - B (points) over shared seeds, with its bootstrap interval."""

    diff: float
    low: float
    high: float
    seeds: int
    examples: int

    @property
    def resolved(self) -> bool:
        """True when the 95 % interval excludes 0: the data order A and B."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Sequence[Sequence[Sequence[float]]], b: Sequence[Sequence[Sequence[float]]], *,
                     draws: int = 2000, seed: int = 0) -> Paired:
    """A - B in points, over the seeds both share. ``a[s]`` holds the terms of A's value in shared
    seed ``s``: per-image score arrays (1 right, 0 wrong), the value being the mean of their means
    (one term for an accuracy; a clean and an attacked term for W-Robust, which may cover
    different numbers of images). ``b`` the same for B, seeds in the same order. Each draw
    resamples the seeds and, per image count, the images (the same draw for every term that
    covers as many images, so A and B stay paired on them)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs the same seeds on both sides, got {len(a)} and {len(b)}")
    terms = [np.asarray(t, dtype=np.float64) for side in (a, b) for ts in side for t in ts]
    if not terms or any(t.ndim != 1 or t.size == 0 for t in terms) or any(not ts for side in (a, b) for ts in side):
        raise ValueError("paired_bootstrap needs at least one non-empty per-image score array per seed and side")
    rng = np.random.default_rng(seed)
    images = {n: rng.integers(0, n, size=(draws, n)) for n in sorted({t.size for t in terms})}

    def value(ts: Sequence[Sequence[float]]) -> tuple[float, np.ndarray]:  # the point value and one value per draw
        arrays = [np.asarray(t, dtype=np.float64) for t in ts]
        return float(np.mean([x.mean() for x in arrays])), np.mean([x[images[x.size]].mean(axis=1) for x in arrays], axis=0)

    k = len(a)
    points, per = [], []
    for ta, tb in zip(a, b):
        (pa, da), (pb, db) = value(ta), value(tb)
        points.append(pa - pb)
        per.append(da - db)
    per_seed = np.stack(per)  # (seeds, draws)
    seeds = rng.integers(0, k, size=(draws, k)) if k > 1 else np.zeros((draws, 1), dtype=np.int64)
    stats = np.sort(per_seed[seeds, np.arange(draws)[:, None]].mean(axis=1) * 100.0)
    return Paired(100.0 * float(np.mean(points)), float(stats[int(0.025 * draws)]), float(stats[min(draws - 1, int(0.975 * draws))]),
                  k, max(t.size for t in terms))
