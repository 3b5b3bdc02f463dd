"""``advkd report fig2 --plan``, and where the other figures' runs come from.

AdaAD Fig. 2 is the one figure with runs of its own (a sweep of the training eps); the others
draw from runs a table's plan creates, which :data:`FIGURE_SOURCES` names in the refusal.
Built on :class:`advkd.report.plan.Planner`, like the tables' plans.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from advkd.core.errors import AdvkdError
from advkd.report.plan import TEACHER_FREE, Planner, plan_script

FIG2_EPS = (8, 16, 24, 32)  # /255; the grid between 8 and 32 is UNCONFIRMED (spec single-teacher 3.4)
FIG2_TEACHERS = ("wrn34-10", "wrn34-20")  # panels (a) and (b)
FIGURE_SOURCES = {
    "fig3": "train the checkpoints with the table2 plan, then run advkd landscape on them",
    "bmtard-fig3": "the bmtard-table10 plan (the EBB/NLB ablation runs)",
    "bmtard-fig4": "one bmtard run, e.g. from the bmtard-table3 plan",
    "bmtard-fig5": "one bmtard run, e.g. from the bmtard-table3 plan",
    "bmtard-fig6": "one bmtard run, e.g. from the bmtard-table3 plan",
}


@dataclass(frozen=True)
class _SweepRow:
    """The fields of a table row that :meth:`Planner.student` reads."""

    dataset: str
    student: str
    method: str


def plan_fig2(*, preset: str, runs_dir: Path, only: dict[str, str], n_examples: int | None, fmt: str = "sh",
              estimate: bool = True, log: Callable[[str], None] | None = None, device: str = "auto") -> str:
    """AdaAD Fig. 2: ResNet-18 students trained at inner eps {8,16,24,32}/255 (step eps/4, 10 steps),
    one sweep per teacher (WRN-34-10, WRN-34-20), each evaluated clean and by AutoAttack at 8/255.

    Only the training eps changes; eps 8/255 is the main-table run itself. ``--only method=X``
    sweeps another method instead of AdaAD (which baselines the paper swept is UNCONFIRMED);
    ``--only teacher=ARCH`` keeps one panel.
    """
    unknown = sorted(set(only) - {"method", "teacher", "student", "dataset"})
    if unknown:
        raise AdvkdError(f"--only {unknown[0]}=...: fig2's plan filters method, teacher, student or dataset")
    method = only.get("method", "adaad")
    student = only.get("student", "resnet18")
    dataset = only.get("dataset", "cifar10")
    teachers = [t for t in FIG2_TEACHERS if only.get("teacher", t) == t] or [only["teacher"]]
    planner = Planner("adaad", preset, runs_dir, n_examples)
    row = _SweepRow(dataset, student, method)
    for teacher in teachers:
        roles = {} if method in TEACHER_FREE else {"teacher": teacher}
        for e in FIG2_EPS:
            params = {} if e == 8 else {"eps": f"{e}/255", "step_size": f"{e // 4}/255"}
            planner.attack(planner.student(row, roles, params), "aa")  # skipped once results.jsonl has it
        if not roles:
            break  # a teacher-free baseline has one sweep, not one per teacher
    note = "# the eps grid {8,16,24,32}/255 and step eps/4 are UNCONFIRMED (read off AdaAD Fig. 2; the paper lists neither); evaluation stays at 8/255"
    return plan_script(planner, "fig2", preset, [note], fmt, estimate, log, device)


FIGURE_PLANS = {"fig2": plan_fig2}
