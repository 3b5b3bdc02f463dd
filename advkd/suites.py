"""Named attack suites: the attack lists of the papers' tables.

A suite is data: a tuple of attack ids (``clean`` included). Only suites whose every attack
exists are registered.
"""
from __future__ import annotations

from advkd.registry import Registry

SUITES: Registry[tuple[str, ...]] = Registry("suite")

SUITES.add("quick", ("clean", "fgsm", "pgd10"), help="clean, FGSM, PGD-10: a fast sanity check")
SUITES.add(
    "white",
    ("clean", "fgsm", "pgd10", "pgd20-sat", "pgd20-trades", "cwinf"),
    help="every gradient-based Linf attack of both papers (no AutoAttack, no CW2)",
)


def suite_attacks(name: str) -> list[str]:
    return list(SUITES.get(name))
