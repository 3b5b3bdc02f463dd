"""advkd.report.uncertainty and advkd.report.resolve: Welch's test against SciPy's published
values, the paired bootstrap on constructed data, and the ranking footer's verdicts on records."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advkd.evaluation.records import pack_flags
from advkd.report.resolve import compare_cells, seed_scores
from advkd.report.uncertainty import mean_sd, paired_bootstrap, t_sf, welch


def test_t_tail_matches_known_values():
    # scipy.stats.t.sf(2.0, 3) and t.sf(-1.5, 7.3); t.sf(0, df) is 1/2 for any df
    assert t_sf(2.0, 3) == pytest.approx(0.06966298427942152, rel=1e-9)
    assert t_sf(-1.5, 7.3) == pytest.approx(0.912218453598457, rel=1e-9)
    assert t_sf(0.0, 11) == pytest.approx(0.5)


def test_welch_matches_scipy_on_a_worked_example():
    a, b = [28.2, 30.1, 29.0], [25.0, 26.5, 25.9, 26.0]
    w = welch(a, b)
    # by hand: means 29.1 and 25.85, s^2 0.91 and 0.39, se^2 = 0.91/3 + 0.39/4
    se = math.sqrt(0.91 / 3 + 0.39 / 4)
    assert w.diff == pytest.approx(3.25) and w.t == pytest.approx(3.25 / se)
    assert w.df == pytest.approx((0.91 / 3 + 0.39 / 4) ** 2 / ((0.91 / 3) ** 2 / 2 + (0.39 / 4) ** 2 / 3))
    assert w.p == pytest.approx(2 * t_sf(w.t, w.df)) and w.p < 0.05 and w.resolved
    assert w.low < w.diff < w.high and w.low > 0
    same = welch([30.0, 31.0, 29.0], [30.5, 29.5, 30.0])
    assert same.p > 0.5 and not same.resolved and same.low < 0 < same.high
    with pytest.raises(ValueError, match="two values a side"):
        welch([1.0], [1.0, 2.0])
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and math.isnan(mean_sd([4.0])[1])


def test_paired_bootstrap_resolves_a_real_gap_and_not_noise():
    rng = np.random.default_rng(1)
    truth = rng.random(1000)  # how hard each image is: shared by both methods (the pairing)
    better = [[(truth < 0.45 + 0.005 * s).astype(float)] for s in range(3)]
    worse = [[(truth < 0.38).astype(float)] for _ in range(3)]
    gap = paired_bootstrap(better, worse)
    assert gap.diff == pytest.approx(100 * (np.mean([(truth < 0.45 + 0.005 * s).mean() for s in range(3)]) - (truth < 0.38).mean()))
    assert gap.resolved and gap.low > 0 and gap.seeds == 3 and gap.examples == 1000
    coin = [[rng.random(1000) < 0.4] for _ in range(3)]
    coin2 = [[rng.random(1000) < 0.4] for _ in range(3)]
    assert not paired_bootstrap(coin, coin2).resolved
    same = paired_bootstrap(better, better)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_keeps_each_term_on_its_own_images():
    # W-Robust = mean of a clean term on 1000 images and an attack term on the first 100
    clean_a, clean_b = np.r_[np.ones(100), np.zeros(900)], np.zeros(1000)
    attack_a, attack_b = np.zeros(100), np.ones(100)
    p = paired_bootstrap([[clean_a, attack_a]], [[clean_b, attack_b]])
    assert p.diff == pytest.approx(100 * ((0.1 + 0.0) / 2 - (0.0 + 1.0) / 2))  # -45: B's attack term wins
    assert p.high < 0 and p.examples == 1000
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap([[clean_a]], [])


class _Spec:
    metric = "acc"


class _Cell:
    spec = _Spec()

    def __init__(self, sources):
        self.sources = sources


def _rec(seed: int, flags: np.ndarray, attack: str = "pgd10") -> dict:
    return {"seed": seed, "attack": attack, "n_examples": len(flags), "robust_flags": pack_flags(torch.from_numpy(flags.astype(bool))),
            "accuracy": 100 * flags.mean(), "checkpoint": f"c{seed}"}


def test_compare_cells_pairs_only_shared_seeds_and_says_why_not():
    rng = np.random.default_rng(2)
    hard = rng.random(500)
    records = [_rec(s, hard < 0.5) for s in (0, 1, 2)] + [_rec(s, hard < 0.3) for s in (1, 2, 3)]
    a, b = _Cell([0, 1, 2]), _Cell([3, 4, 5])
    assert sorted(seed_scores(a, records)) == ["0", "1", "2"]
    verdict = compare_cells(("A", a), ("B", b), records)
    assert verdict.resolved and verdict.paired.seeds == 2  # seeds 1 and 2 only
    want = 100 * ((hard < 0.5).mean() - (hard < 0.3).mean())
    assert verdict.paired.diff == pytest.approx(want) and verdict.text().startswith(f"A > B ({want:+.1f} [")
    assert compare_cells(("A", _Cell([0])), ("B", _Cell([5])), records).why == "no seed in common"
    records.append({"seed": 0, "attack": "pgd10", "accuracy": 10.0})  # an old record without per-image flags
    verdict = compare_cells(("A", _Cell([6])), ("B", b), records)
    assert verdict.why == "no per-image records" and not verdict.resolved
