"""Sanity checks on a set of robust accuracies, in the spirit of AutoAttack's own checks.

Each fires a short flag when numbers contradict what a sound evaluation must show — usually a
sign of gradient masking or of a broken evaluation. Flags are printed with the table and stored
in the result records; they never change a number.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOLERANCE = 0.5  # percentage points of slack (sampling noise on small evaluation sets)
ITERATIVE = ("pgd10", "pgd20-sat", "pgd20-trades", "cwinf", "pgd", "apgd-ce", "apgd-t", "aa")
MORE_STEPS = (("pgd10", "pgd20-sat"),)  # same step size, more steps: must not be easier to survive
BLACK_BOX_KINDS = ("score-based", "decision-based", "transfer", "gradient-estimation")
TRAIN_MODE_FLAG = ("model-in-train-mode: the model was handed over in train mode (run in eval mode, its mode restored after; "
                   "call model.eval() first)")
_PACKAGE = str(Path(__file__).parent.parent) + os.sep  # advkd/, as its modules' code objects name it


class TrainModeWarning(UserWarning):
    """A model reached an evaluation or an attack in train mode; its records carry ``model-in-train-mode``."""


def warn_if_training(model: Any) -> bool:
    """Whether ``model`` arrives in train mode; if so a :class:`TrainModeWarning` pointing at the
    caller's line outside advkd. The evaluation itself runs in eval mode either way (and restores
    the mode), so a number never depends on it; the flag says the caller's code is worth a look."""
    if not model.training:
        return False
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(TRAIN_MODE_FLAG, TrainModeWarning, stacklevel=level)
    return True


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
        flags.append(TRAIN_MODE_FLAG)
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
