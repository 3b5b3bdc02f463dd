"""Sanity checks on a set of robust accuracies, in the spirit of AutoAttack's own checks.

Each fires a short flag when numbers contradict what a sound evaluation must show — usually a
sign of gradient masking or of a broken evaluation. Flags are printed with the table and stored
in the result records; they never change a number.
"""
from __future__ import annotations

from dataclasses import dataclass

TOLERANCE = 0.5  # percentage points of slack (sampling noise on small evaluation sets)
ITERATIVE = ("pgd10", "pgd20-sat", "pgd20-trades", "cwinf", "pgd", "apgd-ce", "apgd-t", "aa")
MORE_STEPS = (("pgd10", "pgd20-sat"),)  # same step size, more steps: must not be easier to survive
BLACK_BOX_KINDS = ("score-based", "decision-based", "transfer", "gradient-estimation")


@dataclass(frozen=True)
class Accuracy:
    attack: str
    kind: str
    accuracy: float


def sanity_flags(accs: list[Accuracy], *, model_was_training: bool = False) -> list[str]:
    """One line per contradiction found among ``accs`` (attack, kind, accuracy in %)."""
    flags: list[str] = []
    by_id = {a.attack: a for a in accs}
    if model_was_training:
        flags.append("model-in-train-mode: the model was handed over in train mode (evaluated in eval mode; check the caller)")
    white = [a for a in accs if a.attack in ITERATIVE]
    if "fgsm" in by_id and white:
        strongest = min(white, key=lambda a: a.accuracy)
        if by_id["fgsm"].accuracy + TOLERANCE < strongest.accuracy:
            flags.append(
                f"fgsm-below-iterative: FGSM {by_id['fgsm'].accuracy:.2f}% < {strongest.attack} {strongest.accuracy:.2f}%; "
                "a one-step attack beating an iterative one suggests masked gradients"
            )
    for fewer, more in MORE_STEPS:
        if fewer in by_id and more in by_id and by_id[more].accuracy > by_id[fewer].accuracy + TOLERANCE:
            flags.append(
                f"more-steps-weaker: {more} {by_id[more].accuracy:.2f}% > {fewer} {by_id[fewer].accuracy:.2f}%; "
                "more steps of the same size should not raise accuracy"
            )
    white_all = [a for a in accs if a.kind == "white-box" and a.attack != "clean"]
    if white_all:
        strongest = min(white_all, key=lambda a: a.accuracy)
        for a in accs:
            if a.kind in BLACK_BOX_KINDS and a.accuracy + TOLERANCE < strongest.accuracy:
                flags.append(
                    f"{a.kind}-below-white-box: {a.attack} {a.accuracy:.2f}% < {strongest.attack} {strongest.accuracy:.2f}%; "
                    "an attack with less information should not be stronger (gradient masking?)"
                )
    return flags
