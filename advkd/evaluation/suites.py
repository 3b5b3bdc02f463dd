"""Named attack suites: the attack lists of the papers' tables.

A suite is data: a tuple of attack ids (``clean`` included). A suite is only offered when
every one of its attacks is registered.
"""
from __future__ import annotations

from advkd.attacks import ATTACKS
from advkd.core.registry import Registry

SUITES: Registry[tuple[str, ...]] = Registry("suite")
DEFAULT_N_EXAMPLES = 1000  # test images `advkd attack` / `transfer-attack` score unless told (0 = all)


def _suite(name: str, attacks: tuple[str, ...], help: str) -> None:
    if all(a == "clean" or a in ATTACKS for a in attacks):
        SUITES.add(name, attacks, help=help)


_suite("quick", ("clean", "fgsm", "pgd10"), "a fast sanity check")
_suite("aa", ("clean", "aa"), "AutoAttack standard")
_suite("adaad", ("clean", "fgsm", "pgd10", "cw2", "aa"), "AdaAD Tables 2, 3 and 5")
_suite("bmtard-white", ("clean", "fgsm", "pgd20-sat", "pgd20-trades", "cwinf", "aa"), "B-MTARD Tables III and IV")
_suite("bmtard-black", ("clean", "square", "rays"), "B-MTARD Tables V and VI (query attacks; transfer attacks come from transfer-attack)")
_suite("white", ("clean", "fgsm", "pgd10", "pgd20-sat", "pgd20-trades", "cwinf"), "every gradient-based Linf attack of both papers")
_suite("adaad-transfer", ("clean", "fgsm", "pgd10", "jsma"), "AdaAD Table 4, for transfer-attack")
_suite("bmtard-transfer", ("clean", "pgd20-trades", "cwinf"), "B-MTARD Tables V and VI transfer columns, for transfer-attack")
_suite("transfer", ("clean", "fgsm", "pgd10", "pgd20-trades", "cwinf"), "default of transfer-attack: the gradient attacks both papers transfer")


def suite_attacks(name: str) -> list[str]:
    return list(SUITES.get(name))
