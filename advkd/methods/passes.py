"""The forward/backward passes each method's training step cannot avoid, as data.

A :class:`Floor` says which inner attack pass a method repeats ``steps`` times, which no-grad
forwards it needs before and after, which student forwards carry the outer gradient, and how
many reference-fidelity "side forwards" (train-mode student forwards under ``no_grad`` whose only
effect is a BatchNorm running-statistics update) the method keeps by default. Two users read it:
the benchmark harness (``benchmarks/floors.py`` runs a floor with plain PyTorch calls to measure a
method's overhead) and the plan budget (:mod:`advkd.report.budget` prices a training run from
these passes and a calibration of each network).

Counted for the defaults of every method (``advkd.methods.build(name)`` without overrides,
CIFAR-10, 0-indexed epoch 0, i.e. before the IAD warm-up ends; ``after_begin`` gives the floor
from epoch ``begin`` on). The inner-attack kinds are:

- ``student_eval``  : student in eval mode, forward on x' + backward to the input only;
- ``student_train`` : the same with the student in train mode (ARD / IAD / Fair-ARD update BN
  statistics at every attack step);
- ``student_teacher_eval`` : student AND teacher in eval mode on x', input gradient through both
  networks (AdaAD's inner problem: the teacher is re-evaluated at every step, not detached).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Input = Literal["x", "x_adv"]
AttackKind = Literal["student_eval", "student_train", "student_teacher_eval"]


@dataclass(frozen=True)
class Floor:
    """The irreducible passes of one training step (see the module docstring).

    attack:   kind of the inner-attack pass, repeated ``steps`` times (None: no inner maximisation).
    pre:      student eval-mode forwards under no_grad before the attack (TRADES / SCORE targets).
    teachers: (role, input) teacher forwards under no_grad, each once per step.
    grad:     inputs of the train-mode student forwards that carry the outer gradient.
    side:     train-mode student forwards on clean x under no_grad (BatchNorm side effects only).
    note:     why, in one or two sentences.
    """

    attack: AttackKind | None = None
    pre: tuple[Input, ...] = ()
    teachers: tuple[tuple[str, Input], ...] = ()
    grad: tuple[Input, ...] = ()
    side: int = 0
    note: str = ""
    after_begin: Floor | None = field(default=None, compare=False)

    def describe(self, steps: int) -> str:
        """A compact text form: "10 x S_eval fwd+dx; T(x) no-grad; S(x*) train + bwd; 1 side S(x)"."""
        parts = []
        if self.pre:
            parts.append(", ".join(f"S_eval({_sym(i)})" for i in self.pre) + " no-grad")
        if self.attack:
            parts.append(f"{steps} x {ATTACK_SYMBOL[self.attack]} fwd+dx")
        if self.teachers:
            parts.append(", ".join(f"{ROLE_SYMBOL[r]}({_sym(i)})" for r, i in self.teachers) + " no-grad")
        if self.grad:
            parts.append(", ".join(f"S({_sym(i)})" for i in self.grad) + " train + bwd")
        if self.side:
            parts.append(f"{self.side} side S(x)")
        return "; ".join(parts)

    def expected_passes(self, steps: int) -> dict[str, int]:
        """Forward counts in the categories :class:`PassCounter` records (for the cross-check)."""
        counts: dict[str, int] = {}

        def add(key: str, n: int) -> None:
            if n:
                counts[key] = counts.get(key, 0) + n

        add("student.eval.nograd", len(self.pre))
        if self.attack == "student_eval":
            add("student.eval.grad", steps)
        elif self.attack == "student_train":
            add("student.train.grad", steps)
        elif self.attack == "student_teacher_eval":
            add("student.eval.grad", steps)
            add("teacher.eval.grad", steps)
        for role, _ in self.teachers:
            add(f"{role}.eval.nograd", 1)
        add("student.train.grad", len(self.grad))
        add("student.train.nograd", self.side)
        return counts


ATTACK_SYMBOL = {"student_eval": "S_eval", "student_train": "S_train", "student_teacher_eval": "(S+T)_eval"}
ROLE_SYMBOL = {"teacher": "T", "clean_teacher": "T_nat", "robust_teacher": "T_adv"}


def _sym(i: Input) -> str:
    return "x*" if i == "x_adv" else "x"


# The teacher output on a batch that does not change during the step is one forward per batch
# (the methods cache it); a teacher on x* is one more forward after the attack.
_ARD = Floor(
    attack="student_train",
    teachers=(("teacher", "x"),),
    grad=("x_adv",),
    side=1,
    note="ARD inner attack in train mode (BN updates at every step); the clean S(x) of the "
    "alpha<1 CE term still runs at alpha=1 for its BN side effect (counted, no autograd).",
)
_RSLAD = Floor(
    attack="student_eval",
    teachers=(("teacher", "x"),),
    grad=("x_adv", "x"),
    note="teacher soft label on clean x once per batch (shared by the attack and the loss); "
    "alpha=5/6 so S(x) carries gradient.",
)
_MTARD = Floor(
    attack="student_eval",
    teachers=(("robust_teacher", "x_adv"), ("clean_teacher", "x")),
    grad=("x_adv", "x"),
    note="CE-PGD on the student only; robust teacher on x*, clean teacher on x.",
)

FLOORS: dict[str, Floor] = {
    "natural": Floor(grad=("x",), note="no inner maximisation: one train forward + backward."),
    "pgd-at": Floor(
        attack="student_eval",
        grad=("x_adv",),
        side=1,
        note="the reference's clean train-mode forward (accuracy logging) updates BN: a side forward.",
    ),
    "trades": Floor(
        pre=("x",),
        attack="student_eval",
        grad=("x", "x_adv"),
        side=1,
        note="clean eval target once before the attack; the reference's second clean train "
        "forward (the KL target) gives the same output as the first in train mode, so only its BN "
        "update is irreducible: a side forward, not a third autograd graph.",
    ),
    "score": Floor(
        pre=("x",),
        attack="student_eval",
        grad=("x_adv", "x"),
        note="clean eval reference once before the attack; both outer forwards carry gradient.",
    ),
    "ard": _ARD,
    "fair-ard": replace(_ARD, note=_ARD.note + " Kappa counting reuses the attack logits."),
    "rslad": _RSLAD,
    "fair-rslad": replace(_RSLAD, note=_RSLAD.note + " Kappa counting reuses the attack logits."),
    "absld": replace(_RSLAD, note=_RSLAD.note + " Class temperatures change only the softmax of the cached teacher logits."),
    "adaad": Floor(
        attack="student_teacher_eval",
        teachers=(("teacher", "x_adv"),),
        grad=("x_adv",),
        side=1,
        note="input gradient through student AND teacher at every step; T(x*) once after the "
        "attack (no grad); alpha=1 keeps the reference's clean S(x) as a BN side forward.",
    ),
    "adaiad": Floor(
        attack="student_teacher_eval",
        teachers=(("teacher", "x_adv"),),
        grad=("x_adv",),
        side=2,
        note="AdaAD's inner problem; during warm-up the reference's two clean train forwards "
        "(logging, CE at weight 0) are BN side forwards.",
        after_begin=Floor(
            attack="student_teacher_eval",
            teachers=(("teacher", "x_adv"),),
            grad=("x", "x_adv"),
            side=2,
            note="after warm-up the introspection target S(x) carries gradient; the other two "
            "identical clean train forwards are BN side forwards.",
        ),
    ),
    "akd": Floor(
        attack="student_eval",
        teachers=(("teacher", "x_adv"),),
        grad=("x_adv",),
        note="teacher soft label on x* (no grad); no clean forward.",
    ),
    "iad": Floor(
        attack="student_train",
        teachers=(("teacher", "x"),),
        grad=("x_adv",),
        side=1,
        note="ARD's train-mode attack; during warm-up the clean S(x) (CE at weight 0) is a BN side forward.",
        after_begin=Floor(
            attack="student_train",
            teachers=(("teacher", "x"), ("teacher", "x_adv")),
            grad=("x_adv", "x"),
            side=1,
            note="after warm-up: reliability from T(x*) and the introspection target S(x) with "
            "gradient; the second identical clean forward is a BN side forward.",
        ),
    ),
    "iad-ii": Floor(
        attack="student_train",
        teachers=(("robust_teacher", "x_adv"), ("clean_teacher", "x_adv")),
        grad=("x_adv",),
        note="both teachers on x* (no grad); no clean forward during warm-up.",
        after_begin=Floor(
            attack="student_train",
            teachers=(("robust_teacher", "x_adv"), ("clean_teacher", "x_adv")),
            grad=("x_adv", "x"),
            note="after warm-up the introspection target S(x) carries gradient.",
        ),
    ),
    "lmtn": Floor(
        attack="student_eval",
        teachers=(("clean_teacher", "x_adv"), ("robust_teacher", "x_adv"), ("clean_teacher", "x"), ("robust_teacher", "x")),
        grad=("x_adv", "x"),
        note="teacher_input=same: both teachers on x* and on x (4 no-grad teacher forwards).",
    ),
    "bmtard": _MTARD,
    "mtard": _MTARD,
}


def floor_for(name: str, *, epoch: int = 0, begin: int | None = None) -> Floor:
    """The floor of method ``name`` at 0-indexed ``epoch`` (``begin``: the method's warm-up end)."""
    try:
        floor = FLOORS[name]
    except KeyError:
        raise KeyError(f"no floor for method {name!r}: add its passes to advkd/methods/passes.py FLOORS") from None
    if floor.after_begin is not None and begin is not None and epoch >= begin:
        return floor.after_begin
    return floor
