"""ABSLD (Zhao et al., NeurIPS 2024): class-wise re-tempered robust soft labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from advkd.attacks.modes import training_mode
from advkd.core.distributed import all_reduce_sum
from advkd.core.errors import AdvkdError
from advkd.core.settings import setting
from advkd.methods.base import InnerParams, Method
from advkd.methods.losses import kl_div, klm
from advkd.methods.registry import register


@dataclass
class ABSLDParams(InnerParams):
    """Defaults: [ABSLD] ``absld_loss.py`` / ``resnet18_absld_cifar10.py`` (multi-teacher spec 5).

    alpha = 5/6 weights the adversarial term (clean term 1/6). Temperatures start at tau_init = 1
    and stay in [tau_min, tau_max] = [0.5, 5]; eta = 0.1 is the base rate of the end-of-epoch
    update, decayed with the lr (x0.1 at 215/260/285 in the reference, via ``next_rate_factor``).
    temperature_mode: ``reference`` (default: the reference code's aliasing, both label sets use
    tau_adv * tau_nat, spec 5.2) or ``paper`` (separate adversarial / natural temperatures, as
    the paper's equations read). class_stats: ``reference`` (default: the temperature update
    centres the per-class risk sums on their mean over all C classes, an absent class counting
    0) or ``counted`` (only the classes seen this epoch; absent ones keep their temperature).
    kl_scale multiplies the whole loss; 1 by default (only CIFAR-10 is published; a CIFAR-100
    x10 as in RSLAD is UNCONFIRMED).
    """

    alpha: float = setting(5.0 / 6.0, ge=0, le=1)
    kl_scale: float = setting(1.0, ge=0)
    temperature_mode: Literal["reference", "paper"] = "reference"  # reference (tau_adv * tau_nat on both) | paper (separate)
    class_stats: Literal["reference", "counted"] = "reference"  # reference (mean over all classes) | counted (seen classes only)
    tau_init: float = setting(1.0, gt=0)
    eta: float = setting(0.1, ge=0)
    tau_min: float = setting(0.5, gt=0)
    tau_max: float = setting(5.0, gt=0)
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"  # x + 0.001*N(0, I) ...
    clamp_init: bool = False  # ... not clamped before the first forward


@register
class ABSLD(Method):
    """ABSLD: RSLAD with class-wise teacher temperatures adapted to the student's class error risks.

    Paper: Zhao et al., "Improving Adversarial Robust Fairness via Anti-Bias Soft Label
    Distillation", NeurIPS 2024 (arXiv 2312.05508); code [ABSLD] (multi-teacher spec 5).
    The robust teacher runs once per batch on CLEAN x (eval, no grad); each sample's label is
    tempered by the temperature of its TRUE class:

        q_adv,i = softmax(z_T(x_i) / tau_adv[y_i]),   q_nat,i = softmax(z_T(x_i) / tau_nat[y_i])

    Inner (spec 5.1): student in eval mode, start x + 0.001*N(0,I) not clamped, 10 x 2/255
    maximising SUM KL(q_adv || S(x')). Outer (train mode, S(x*) then S(x); student temperature 1,
    no tau^2; element-mean KLm of spec 0.3):

        L = kl_scale * [5/6 * KLm(q_adv || S(x*)) + 1/6 * KLm(q_nat || S(x))]

    Class temperatures (spec 5.3): during the epoch the per-class SUMS of CE(S(x*_i), y_i) and
    CE(S(x_i), y_i) (detached train-mode logits of the step) are accumulated; at the end of the
    epoch, after all-reducing them, for adv and nat separately:
    ``g = R - mean(R)``, ``tau <- clamp(tau - eta * g / max|g|, 0.5, 5)``, eta = 0.1 x the lr
    factor of the NEXT epoch (the reference decays eta with the lr before updating). High-risk
    classes are cooled (sharper labels), easy ones heated.

    As the reference runs it (the defaults): its two tempered logit copies share storage
    (``.detach()`` views divided in place), so BOTH soft labels are softmax(z_T / (tau_adv[y] *
    tau_nat[y])); ``method.temperature_mode=paper`` keeps them separate, as the equations read.
    The mean in g runs over all C classes (``method.class_stats=counted``: the seen ones only).
    Two deliberate departures: ``log_softmax`` where the reference writes ``log(softmax)``
    (equal to rounding, but finite where a probability underflows to 0 and the reference's loss
    would be infinite), and an update skipped when every class risk is equal (max|g| = 0, where
    the reference divides 0 by 0 and its temperatures become NaN).
    """

    name = "absld"
    roles = ("teacher",)
    Params = ABSLDParams

    def __init__(self, teachers, params, *, num_classes, dataset):
        super().__init__(teachers, params, num_classes=num_classes, dataset=dataset)
        if not 0 < params.tau_min <= params.tau_max:
            raise AdvkdError(f"method.tau_min / tau_max must satisfy 0 < tau_min <= tau_max, got {params.tau_min}, {params.tau_max}")
        self.tau_adv: list[float] = [float(params.tau_init)] * num_classes
        self.tau_nat: list[float] = [float(params.tau_init)] * num_classes
        self._sums: torch.Tensor | None = None  # (3, C) float64: risk adv, risk nat, count (this epoch)

    # ------------------------------------------------------------------ per batch
    def targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_adv, q_nat): the teacher's clean soft labels tempered by the true class's temperatures."""
        logits = self.teacher_logits("teacher", x)
        t_adv = torch.tensor(self.tau_adv, dtype=logits.dtype, device=logits.device)[y]
        t_nat = torch.tensor(self.tau_nat, dtype=logits.dtype, device=logits.device)[y]
        if self.p.temperature_mode == "reference":
            t_adv = t_nat = t_adv * t_nat
        return F.softmax(logits / t_adv[:, None], dim=1), F.softmax(logits / t_nat[:, None], dim=1)

    def perturb(self, student, x, y):
        q_adv, _ = self.targets(x, y)
        with training_mode(student, train=False):
            return self.attack(lambda xa: kl_div(student(xa), q_adv, "sum"), x)

    def loss(self, student, x, x_adv, y):
        q_adv, q_nat = self.targets(x, y)
        logits_adv = student(x_adv)
        logits_nat = student(x)  # always runs: it feeds the natural class risk
        adv = klm(logits_adv, q_adv)
        nat = klm(logits_nat, q_nat)
        loss = self.p.kl_scale * (self.p.alpha * adv + (1 - self.p.alpha) * nat)
        self._record(logits_adv.detach(), logits_nat.detach(), y)
        return loss, {"loss": loss.item(), "loss_adv": adv.item(), "loss_nat": nat.item()}

    def _record(self, logits_adv: torch.Tensor, logits_nat: torch.Tensor, y: torch.Tensor) -> None:
        c = self.num_classes
        if self._sums is None:
            self._sums = torch.zeros(3, c, dtype=torch.float64, device=y.device)
        elif self._sums.device != y.device:
            self._sums = self._sums.to(y.device)
        self._sums[0].index_add_(0, y, F.cross_entropy(logits_adv, y, reduction="none").double())
        self._sums[1].index_add_(0, y, F.cross_entropy(logits_nat, y, reduction="none").double())
        self._sums[2].add_(torch.bincount(y, minlength=c).double())

    # ------------------------------------------------------------------ per epoch
    def end_epoch(self, epoch: int, next_rate_factor: float) -> None:
        """All-reduce the epoch's class risks and move both temperature vectors (spec 5.3).

        ``class_stats=reference``: every class enters the mean (an absent one with risk 0, so it
        is heated); ``counted``: classes with no sample this epoch (only possible on subsets) are
        left out of the mean and keep their temperatures.
        """
        sums = self._sums if self._sums is not None else torch.zeros(3, self.num_classes, dtype=torch.float64)
        sums = all_reduce_sum(sums.clone()).cpu()
        seen = sums[2] > 0 if self.p.class_stats == "counted" else torch.ones(self.num_classes, dtype=torch.bool)
        eta = self.p.eta * next_rate_factor
        self.tau_adv = self._update(self.tau_adv, sums[0], seen, eta)
        self.tau_nat = self._update(self.tau_nat, sums[1], seen, eta)
        self._sums = None

    def _update(self, tau: list[float], risk: torch.Tensor, seen: torch.Tensor, eta: float) -> list[float]:
        t = torch.tensor(tau, dtype=torch.float64)
        if seen.any():
            gap = risk[seen] - risk[seen].mean()
            largest = gap.abs().max()
            if largest > 0:
                t[seen] = t[seen] - eta * gap / largest
        return t.clamp(self.p.tau_min, self.p.tau_max).tolist()

    def state_dict(self) -> dict[str, Any]:
        sums = torch.zeros(3, self.num_classes, dtype=torch.float64) if self._sums is None else self._sums
        return {
            "tau_adv": list(self.tau_adv),
            "tau_nat": list(self.tau_nat),
            "risk_adv": sums[0].tolist(),
            "risk_nat": sums[1].tolist(),
            "count": sums[2].tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = ("tau_adv", "tau_nat", "risk_adv", "risk_nat", "count")
        if set(state) != set(keys):
            raise AdvkdError(f"method absld: resume state has keys {sorted(state)}, expected {sorted(keys)}")
        for k in keys:
            if len(state[k]) != self.num_classes:
                raise AdvkdError(f"method absld: resume state {k} has {len(state[k])} classes, the dataset has {self.num_classes}")
        self.tau_adv = [float(v) for v in state["tau_adv"]]
        self.tau_nat = [float(v) for v in state["tau_nat"]]
        if any(state["count"]):
            self._sums = torch.tensor([state["risk_adv"], state["risk_nat"], state["count"]], dtype=torch.float64)
        else:
            self._sums = None

    def epoch_metrics(self) -> dict[str, Any]:
        return {"tau_adv": list(self.tau_adv), "tau_nat": list(self.tau_nat)}
