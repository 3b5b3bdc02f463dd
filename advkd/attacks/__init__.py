"""Adversarial attacks: the shared projected-gradient engine and the named evaluation attacks.

- :func:`projected_gradient`, :func:`random_start`, :func:`input_gradient` — the engine, also
  used by training inner loops with their own loss closures;
- :func:`training_mode` — explicit, restoring train/eval switch;
- :data:`ATTACKS` — registry of named attacks: white-box ``fgsm``, ``pgd``, ``pgd10``,
  ``pgd20-sat``, ``pgd20-trades``, ``cwinf``, ``cw2``; AutoAttack ``aa`` and its components
  ``apgd-ce``, ``apgd-t``, ``fab-t``, ``aa-square`` (:mod:`.autoattack`, via ``pyautoattack``);
  score-based ``square`` (100 queries), decision-based ``rays``, the L0 ``jsma`` (AdaAD Table 4
  form) and the gradient-estimation ``spsa``. Entries carry ``kind`` metadata ("white-box",
  "score-based", "decision-based", "gradient-estimation", "transfer-only") where set.
  :func:`build` and :func:`list_attacks` sit on top of it.

Pipeline stage 3 (beside ``advkd.methods``). May import: ``advkd.core`` only.
"""
from __future__ import annotations

from typing import Any

from advkd.attacks import autoattack as _autoattack  # noqa: F401,I001  (aa, apgd-ce, apgd-t, fab-t, aa-square)
from advkd.attacks import cw2 as _cw2  # noqa: F401,I001  (registers cw2, listed after them)
from advkd.attacks import gradient as _gradient  # noqa: F401  (registers the gradient attacks)
from advkd.attacks import jsma as _jsma  # noqa: F401,I001  (jsma, L0)
from advkd.attacks import rays as _rays  # noqa: F401,I001  (rays, decision-based)
from advkd.attacks import spsa as _spsa  # noqa: F401,I001  (spsa, gradient estimation)
from advkd.attacks import square as _square  # noqa: F401,I001  (square, 100-query score-based)
from advkd.attacks.engine import (
    ATTACKS,
    Attack,
    input_gradient,
    project,
    projected_gradient,
    random_start,
    register_attack,
)
from advkd.attacks.losses import cross_entropy, cw_margin, margin
from advkd.attacks.modes import training_mode
from advkd.core.epsilon import Eps

__all__ = [
    "ATTACKS",
    "Attack",
    "build",
    "cross_entropy",
    "cw_margin",
    "input_gradient",
    "list_attacks",
    "margin",
    "project",
    "projected_gradient",
    "random_start",
    "register_attack",
    "training_mode",
]


def build(attack_id: str, eps: str | float | Eps | None = None, **params: Any) -> Attack:
    """Instantiate the attack ``attack_id`` (aliases accepted).

    ``eps=None`` takes the attack's default (8/255 for the bounded ones; the unbounded ``cw2``
    takes no eps). Unknown ids or parameter names, wrong types and out-of-range values raise
    :class:`advkd.core.errors.AdvkdError` naming the valid choices.
    """
    return ATTACKS.get(attack_id)(eps=eps, **params)


def list_attacks(pattern: str | None = None) -> list[str]:
    """Registered attack ids, optionally filtered by a glob ``pattern`` (e.g. ``"pgd*"``)."""
    return ATTACKS.names(pattern)
