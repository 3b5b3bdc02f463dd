"""The method interface: inner maximisation (``perturb``) + outer objective (``loss``).

A method never touches the optimizer or the data; the one training loop in ``advkd.training.loop``
calls ``perturb`` then ``loss`` for every batch, and ``start_epoch`` before each epoch. Teachers
are frozen here (eval mode, ``requires_grad_(False)``) so no method can train them by accident.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advkd.attacks.engine import projected_gradient
from advkd.attacks.modes import training_mode
from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError
from advkd.core.settings import setting


@dataclass
class InnerParams:
    """Inner-maximisation settings shared by every adversarial method (AdaAD paper section 4)."""

    eps: str = "8/255"
    step_size: str = "2/255"
    steps: int = setting(10, ge=0)
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"  # gaussian (x + init_std*N(0,I)) | uniform (U(-eps, eps)) | zero
    init_std: float = setting(0.001, ge=0)
    clamp_init: bool = False  # clip the start to [0,1] before the first forward


class Method(abc.ABC):
    """Base class: holds frozen teachers, parsed inner settings and the epoch position.

    Subclasses set ``name``, ``roles`` (teacher roles they need) and ``Params`` (a dataclass of
    hyper-parameters with the published defaults) and implement ``perturb`` and ``loss``.
    """

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type] = InnerParams
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig fields the reference fixes for this method (below any preset)

    def __init__(self, teachers: dict[str, nn.Module], params: Any, *, num_classes: int, dataset: str) -> None:
        self.teachers = {role: freeze(t) for role, t in teachers.items()}
        self.p = params
        self.num_classes = num_classes
        self.dataset = dataset
        self.epoch = 0
        self.rate_factor = 1.0  # current lr / initial lr; balancers decay their rates with it
        if hasattr(params, "eps"):
            self.eps = parse_eps(params.eps, what="method.eps").value
            self.step_size = parse_eps(params.step_size, what="method.step_size").value
            if params.steps < 0:
                raise AdvkdError(f"method.steps must be >= 0, got {params.steps}")
        self._teacher_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ interface
    @abc.abstractmethod
    def perturb(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Inner maximisation: return x_adv, detached."""

    @abc.abstractmethod
    def loss(self, student: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Outer objective (student in train mode) and scalars to log."""

    def start_epoch(self, epoch: int, rate_factor: float) -> None:
        """Called before each epoch with its 0-indexed position (= epochs completed) and lr / initial lr.

        Epoch-valued method settings (IAD's ``begin``) count completed epochs, like milestones:
        a term switched on at ``begin = 60`` first acts in epoch 61 as printed.
        """
        self.epoch = epoch
        self.rate_factor = rate_factor

    def end_epoch(self, epoch: int, next_rate_factor: float) -> None:
        """Called after each epoch's last batch, with lr(epoch + 1) / initial lr.

        Epoch-level statistics (class-wise weights and temperatures) update here; a rate that
        the reference decays "with the lr at the end of the epoch" uses ``next_rate_factor``.
        """

    def state_dict(self) -> dict[str, Any]:
        """Method state that changes during training (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise AdvkdError(f"method {self.name} has no state, but the resume state holds {sorted(state)}")

    def epoch_metrics(self) -> dict[str, Any]:
        """Method state to write to metrics.jsonl every epoch."""
        return self.state_dict()

    # ------------------------------------------------------------------ helpers
    def attack(self, loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run the shared projected-gradient engine with this method's inner settings."""
        return projected_gradient(
            loss_fn,
            x,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.p.steps,
            norm="Linf",
            init=self.p.init,
            init_std=self.p.init_std,
            clamp_init=self.p.clamp_init,
        )

    def student_ce_attack(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, *, train: bool = False) -> torch.Tensor:
        """The common inner maximisation: CE-PGD on the student alone (mean reduction; a sign step
        ignores the scale), the student in eval mode unless ``train`` (PGD-AT, MTARD family, AKD)."""
        with training_mode(student, train=train):
            return self.attack(lambda xa: F.cross_entropy(student(xa), y), x)

    @property
    def kl_scale(self) -> float:
        """``kl_scale`` setting, where 0 means the reference's automatic choice: x10 on CIFAR-100
        (RSLAD and MTARD code keep the element-mean KL on the CIFAR-10 scale), 1 elsewhere."""
        setting = float(getattr(self.p, "kl_scale", 1.0))
        if setting > 0:
            return setting
        return 10.0 if self.dataset == "cifar100" else 1.0

    @torch.no_grad()
    def teacher_logits(self, role: str, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits on a batch that does not change during the step, computed once.

        The cache holds one batch per role and is keyed by tensor identity, so a teacher output
        that does not depend on the perturbation costs one forward per batch, not one per use.
        """
        cached = self._teacher_cache.get(role)
        if cached is not None and cached[0] is x:
            return cached[1]
        logits = self.teachers[role](x)
        self._teacher_cache[role] = (x, logits)
        return logits


def freeze(model: nn.Module) -> nn.Module:
    """Teachers are never trained: eval mode, no parameter gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


def side_forward(student: nn.Module, x: torch.Tensor) -> None:
    """A forward whose output is unused but whose BatchNorm statistics update the reference keeps.

    (single-teacher spec pitfall 8). Run without autograd: only the running statistics matter.
    """
    with torch.no_grad():
        student(x)
