"""Per-method floors: the forward/backward passes a method's algorithm cannot avoid.

A floor is *data* (:class:`advkd.methods.passes.Floor`, where the table of every method's
passes lives and is documented). :func:`run_floor` executes a floor with plain PyTorch
calls -- no advkd method, attack engine or loss code -- on the same models and batch as the method step, so
``overhead = method step time / floor time`` measures everything a method does beyond its
irreducible passes (loss arithmetic, the PGD update, mode switches, Python, redundant passes).

What is deliberately *not* part of a floor (and so counts as overhead): the PGD update
arithmetic (sign, step, project, clip: a few element-wise ops per step), the loss functions
(B x C arithmetic), ``.item()`` logging, balancer state updates and train/eval switching.
The floor's outer loss is a plain cross-entropy on each gradient-carrying output; the floor ends
with the same ``zero_grad / backward / SGD step`` as the method step.

Order: the floor runs its no-grad teacher forwards *before* the gradient-carrying student
forwards, the order with the lowest peak memory (a teacher forward's temporaries never coexist
with the student's autograd graph). A method that computes its teacher targets after ``S(x*)``
does the same arithmetic but needs more memory, and on CPU pays for it in page faults
(fresh pages from the allocator); that shows up as overhead and as a higher peak.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.methods.passes import ATTACK_SYMBOL, FLOORS, ROLE_SYMBOL, AttackKind, Floor, Input, floor_for  # noqa: F401  (the data lives in the package)

# ----------------------------------------------------------------------------- selection


def selected_methods(spec: str | None) -> list[str]:
    """The methods a benchmark's ``--methods a,b`` names, in that order (every registered method
    when unset); ValueError naming the unknown ones and the valid names."""
    from advkd.methods import list_methods

    names = list_methods()
    if not spec:
        return names
    wanted = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    return wanted


# ----------------------------------------------------------------------------- execution


def attack_start(x: torch.Tensor, std: float = 0.001) -> torch.Tensor:
    """A fixed starting iterate for the floor's attack passes (computed once, outside the timing)."""
    return (x + std * torch.randn_like(x)).clamp(0.0, 1.0)


def run_floor(
    floor: Floor,
    *,
    student: nn.Module,
    teachers: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    x_start: torch.Tensor,
    steps: int,
    optimizer: torch.optim.Optimizer,
) -> torch.Tensor:
    """Execute ``floor`` once with plain PyTorch calls; returns the outer loss (detached).

    The attack passes all run on the same start iterate (their result is not fed back: the
    update arithmetic is not part of the floor). Teachers must already be frozen (eval,
    ``requires_grad_(False)``). The student is left in train mode.
    """
    if floor.pre:
        student.eval()
        with torch.no_grad():
            for _ in floor.pre:
                student(x)
    if floor.attack is not None and steps > 0:
        student.train(floor.attack == "student_train")
        teacher = teachers.get("teacher") if floor.attack == "student_teacher_eval" else None
        for _ in range(steps):
            xa = x_start.detach().requires_grad_(True)
            out = student(xa).sum()
            if teacher is not None:
                out = out + teacher(xa).sum()
            torch.autograd.grad(out, xa)
    student.train()
    x_adv = x_start  # any tensor of the right shape: the floor does not compute x*
    inputs = {"x": x, "x_adv": x_adv}
    with torch.no_grad():
        for role, which in floor.teachers:
            teachers[role](inputs[which])
    loss = sum(F.cross_entropy(student(inputs[which]), y) for which in floor.grad)
    with torch.no_grad():
        for _ in range(floor.side):
            student(x)
    optimizer.zero_grad(set_to_none=True)
    if floor.grad:
        loss.backward()
        optimizer.step()
        return loss.detach()
    return torch.zeros(())


# ----------------------------------------------------------------------------- pass counting


class PassCounter:
    """Forward hooks that count top-level forwards of the student and each teacher.

    Categories: ``<who>.<train|eval>.<grad|nograd>`` where ``grad`` means autograd records the
    forward (grad mode on and the input or a parameter requires grad). Use as a context manager.
    """

    def __init__(self, student: nn.Module, teachers: dict[str, nn.Module]) -> None:
        self.modules = {"student": student, **teachers}
        self.counts: dict[str, int] = {}
        self._handles: list = []

    def __enter__(self) -> PassCounter:
        for who, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(who)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, who: str):
        def hook(module: nn.Module, args) -> None:
            inp = args[0] if args else None
            records = torch.is_grad_enabled() and (
                (isinstance(inp, torch.Tensor) and inp.requires_grad) or any(p.requires_grad for p in module.parameters())
            )
            key = f"{who}.{'train' if module.training else 'eval'}.{'grad' if records else 'nograd'}"
            self.counts[key] = self.counts.get(key, 0) + 1

        return hook
