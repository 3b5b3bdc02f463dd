"""Robust accuracy of a model under a list of attacks, with per-example flags.

Gradient attacks only attack points the model classifies correctly on clean input: a
misclassified clean point counts as not robust under every attack (as RobustBench and
AutoAttack count it), so attacking it would only waste passes. Accuracy under an attack is
the final iterate's accuracy (the papers' semantics). ``worst`` is the pointwise worst case
over the listed attacks: a point is robust only if every attack failed on it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advkd.attacks import ATTACKS
from advkd.attacks import build as build_attack
from advkd.attacks.modes import training_mode
from advkd.data import TensorData, eval_batches
from advkd.epsilon import Eps, parse_eps
from advkd.progress import Reporter

CLEAN = "clean"


@dataclass
class Outcome:
    """Per-example correctness of one attack on an evaluation set."""

    attack: str
    correct: torch.Tensor  # bool (N,)
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    eps: Eps | None = None
    threat_model: str = ""

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def accuracy(self) -> float:
        return 100.0 * self.n_correct / max(self.n, 1)


def w_robust(clean_acc: float, robust_acc: float) -> float:
    """B-MTARD Eq. 22: 0.5 * clean + 0.5 * robust."""
    return 0.5 * clean_acc + 0.5 * robust_acc


def _build(attack_id: str, eps: Eps, params: dict[str, Any]):
    """Bounded attacks get the evaluation eps; unbounded ones (cw2) take none."""
    bounded = ATTACKS.get(attack_id).default_eps is not None
    return build_attack(attack_id, eps=eps if bounded else None, **params)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def evaluate(
    model: nn.Module,
    data: TensorData,
    attacks: list[str],
    *,
    eps: str | float | Eps = "8/255",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    reporter: Reporter | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Outcome]:
    """Evaluate ``model`` (put in eval mode, restored after) on ``data`` under ``attacks``.

    ``attacks`` are attack ids; ``"clean"`` is always evaluated (first) because the others skip
    clean-misclassified points. Returns attack id -> Outcome, clean included.
    """
    eps = parse_eps(eps)
    reporter = reporter or Reporter(enabled=False)
    built = {a: _build(a, eps, (attack_params or {}).get(a, {})) for a in attacks if a != CLEAN}
    n = len(data)
    clean = torch.zeros(n, dtype=torch.bool)
    correct = {a: torch.zeros(n, dtype=torch.bool) for a in built}
    seconds = {a: 0.0 for a in [CLEAN, *built]}
    n_batches = -(-n // batch_size)
    with training_mode(model, train=False):
        with reporter.task(f"evaluate {', '.join([CLEAN, *built])}", total=n_batches) as task:
            for x, y, idx in eval_batches(data, batch_size, device=device):
                t0 = time.perf_counter()
                ok = _predict(model, x) == y
                clean[idx.cpu()] = ok.cpu()
                seconds[CLEAN] += time.perf_counter() - t0
                for attack_id, attack in built.items():
                    t0 = time.perf_counter()
                    if ok.any():
                        x_adv = attack(model, x[ok], y[ok])
                        still = _predict(model, x_adv) == y[ok]
                        flags = torch.zeros_like(ok)
                        flags[ok] = still
                        correct[attack_id][idx.cpu()] = flags.cpu()
                    seconds[attack_id] += time.perf_counter() - t0
                task.advance(1, clean=100.0 * float(clean[: int(idx.max()) + 1].float().mean()))
    out = {CLEAN: Outcome(CLEAN, clean, seconds[CLEAN], threat_model="none")}
    for attack_id, attack in built.items():
        out[attack_id] = Outcome(
            attack_id, correct[attack_id], seconds[attack_id], params=dict(attack.params), eps=attack.eps, threat_model=attack.threat_model
        )
    return out


def worst_case(outcomes: dict[str, Outcome]) -> torch.Tensor:
    """Pointwise worst case: robust only where every listed attack (and clean) was survived."""
    flags = None
    for outcome in outcomes.values():
        flags = outcome.correct.clone() if flags is None else flags & outcome.correct
    return flags if flags is not None else torch.zeros(0, dtype=torch.bool)
