"""IAD (Zhu et al., ICLR 2022, "Reliable Adversarial Distillation with Unreliable Teachers"): IAD-I and IAD-II.

Both follow the official ``ZFancy/IAD`` scripts ``IAD-I.py`` / ``IAD-II.py`` (spec single-teacher
2.5): ARD's inner maximisation (student CE-PGD, SUM reduction, uniform start not clamped, student
in *train* mode so BatchNorm statistics update at every attack step), a per-sample reliability
weight ``w_i = softmax(T(x'_i))[y_i] ** beta`` from the (robust) teacher on the adversarial
input, used as a constant, and the "introspection" term ``(1 - w_i) * KL(S(x_i) || S(x'_i))``
that the student distils from its own clean prediction once the warm-up is over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advkd.attacks.modes import training_mode
from advkd.core.settings import setting
from advkd.methods.base import InnerParams, Method, side_forward
from advkd.methods.losses import kl_div, tempered_probs
from advkd.methods.registry import register


def reliability_weights(teacher_logits: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """IAD's per-sample teacher reliability ``w_i = (softmax(T)_{i, y_i}) ** beta``, shape (B,).

    Vectorised with ``gather`` and detached: the reference turns each weight into a Python float
    (``.item()``), so no gradient ever flows through ``w`` (spec pitfall 9).
    """
    p_true = F.softmax(teacher_logits.detach(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    return p_true.pow(beta).detach()


def introspective_tail(
    loss: torch.Tensor, logs: dict, teacher_adv: torch.Tensor | None, logits_adv: torch.Tensor,
    logits_nat: torch.Tensor | None, y: torch.Tensor, p,
) -> torch.Tensor:
    """IAD's terms after the teacher term, shared by IAD-I and AdaIAD (spec 2.5, 2.9).

    With ``teacher_adv`` (after warm-up): + alpha * (1/B) sum_i (1 - w_i) KL(S(x_i) || S(x'_i)),
    w_i = p_T(x')_{y_i}^beta detached, the clean target NOT detached, no temperature. Then
    + (1 - alpha) * CE(S(x), y) when alpha != 1. Fills ``logs`` and returns the total loss.
    """
    if teacher_adv is not None:
        w = reliability_weights(teacher_adv, y, p.beta)
        intro = ((1 - w) * kl_div(logits_adv, F.softmax(logits_nat, dim=1), "none")).mean()
        loss = loss + p.alpha * intro
        logs["loss_introspect"] = intro.item()
        logs["reliability"] = w.mean().item()
    if p.alpha != 1:
        ce = F.cross_entropy(logits_nat, y)
        loss = loss + (1 - p.alpha) * ce
        logs["loss_ce"] = ce.item()
    logs["loss"] = loss.item()
    return loss


def ard_inner(method: Method, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ARD/IAD inner maximisation: PGD on CE(S(x'), y) with SUM reduction (spec 2.4, 2.5).

    ``method.p.attack_bn`` picks the student's BN mode during the attack ("train" in the
    reference: running statistics update at every step); the mode is restored afterwards.
    """
    with training_mode(student, train=method.p.attack_bn == "train"):
        return method.attack(lambda xa: F.cross_entropy(student(xa), y, reduction="sum"), x)


@dataclass
class IADParams(InnerParams):
    """Defaults: ``ZFancy/IAD`` ``IAD-I.py`` argparse defaults (spec single-teacher 2.5).

    alpha = 1 (also the AdaAD paper's value), beta = 0.1, begin = 60 (0-indexed epoch from which
    the reliability weights and the introspection term are used). temperature = 1 is the IAD code
    default; the AdaAD paper's "recommended tau" for IAD is UNCONFIRMED (1 or 30; spec open
    item 1). The inner settings are ARD's: uniform start, not clamped, student in train mode.
    """

    alpha: float = setting(1.0, ge=0, le=1)  # weight of the distillation terms; (1 - alpha) weighs CE(S(x), y)
    temperature: float = setting(1.0, gt=0)  # tau of the teacher term (and its tau^2 factor); none on the introspection term
    beta: float = setting(0.1, ge=0)  # reliability exponent: w_i = p_T(y_i | x'_i) ** beta
    begin: int = setting(60, ge=0)  # first 0-indexed epoch with reliability weighting + introspection
    init: Literal["gaussian", "uniform", "zero"] = "uniform"  # x + U(-eps, eps) ...
    clamp_init: bool = False  # ... not clamped before the first forward
    attack_bn: Literal["eval", "train"] = "train"  # the reference AttackPGD wrapper runs the student in train mode
    bn_side_forward: bool = True  # keep the reference's clean train-mode forwards whose loss weight is zero


@register
class IAD(Method):
    """IAD-I: ARD with a reliability-weighted introspection term after warm-up (teacher on clean x).

    Paper: Zhu et al., "Reliable Adversarial Distillation with Unreliable Teachers", ICLR 2022;
    reference ``ZFancy/IAD`` ``IAD-I.py`` (spec single-teacher 2.5). "IAD" in the AdaAD tables is
    most likely this variant (UNCONFIRMED, spec open item 7).

    Inner: ARD's (CE-PGD on the student, SUM reduction, start x + U(-eps, eps) not clamped,
    10 x 2/255, eps 8/255, student in train mode). Reliability ``w_i = softmax(T(x'_i))[y_i]^beta``
    from the teacher on the *adversarial* input, constant (no gradient). Outer, with e the
    0-indexed epoch:

    - e >= begin: ``alpha*tau^2*BATCHMEAN KL(T_tau(x) || S_tau(x')) + alpha*(1/B)*sum_i (1-w_i)*KL(S(x_i) || S(x'_i)) + (1-alpha)*CE(S(x), y)``
    - e < begin:  ``alpha*tau^2*BATCHMEAN KL(T_tau(x) || S_tau(x')) + (1-alpha)*CE(S(x), y)``

    The teacher term uses T on the *clean* x and is not weighted by w. The introspection target
    softmax(S(x)) is a train-mode clean forward and is not detached (gradients flow through both
    sides); that term has no temperature and no tau^2. Defaults: alpha 1, tau 1, beta 0.1,
    begin 60 (IAD-I.py). The paper writes KL(S || T); the code (followed here) uses the teacher
    as the target.

    BatchNorm, in the reference's order (``IAD-I.py``, training step): 10 train-mode attack
    forwards, S(x') (the attack wrapper's 11th forward), a second S(x') whose output the
    reference detaches and never uses (``basicop``), then after warm-up the clean S(x) of the
    introspection target, and the clean S(x) of the CE term (computed even when alpha = 1):
    13 updates per batch during warm-up, 14 after. Both clean forwards give identical outputs
    in train mode, so one of them carries the gradient and the other only updates BN statistics;
    the unused forwards run without autograd (``bn_side_forward=false`` drops every forward
    that carries no gradient: 11 / 12).
    """

    name = "iad"
    roles = ("teacher",)
    Params = IADParams

    def perturb(self, student, x, y):
        return ard_inner(self, student, x, y)

    def loss(self, student, x, x_adv, y):
        tau = self.p.temperature
        introspect = self.epoch >= self.p.begin
        teacher_clean = tempered_probs(self.teacher_logits("teacher", x), tau)  # no-grad targets first
        teacher_adv = self.teacher_logits("teacher", x_adv) if introspect else None
        logits_adv = student(x_adv)
        if self.p.bn_side_forward:
            side_forward(student, x_adv)  # the reference's detached S(x') forward (IAD-I.py ``basicop``)
        distill = kl_div(logits_adv / tau, teacher_clean, "batchmean")
        loss = self.p.alpha * tau * tau * distill
        logs = {"loss_distill": distill.item()}

        need_clean = introspect or self.p.alpha != 1
        # reference clean train-mode forwards: S(x) for CE always, then S(x) again for the introspection target
        reference_clean = 1 + int(introspect)
        logits_nat = student(x) if need_clean else None
        if self.p.bn_side_forward:
            for _ in range(reference_clean - int(need_clean)):
                side_forward(student, x)
        loss = introspective_tail(loss, logs, teacher_adv, logits_adv, logits_nat, y, self.p)
        return loss, logs


@dataclass
class IAD2Params(InnerParams):
    """Defaults: ``ZFancy/IAD`` ``IAD-II.py`` argparse defaults (spec single-teacher 2.5, last paragraph).

    alpha1 = 0.5 (robust-teacher + introspection weight), alpha2 = 0.25 (clean-teacher weight),
    CE weight 1 - alpha1 - alpha2 = 0.25, tau = 1, beta = 0.1, begin = 40. Inner settings are
    ARD's (uniform start not clamped, student in train mode).
    """

    alpha1: float = setting(0.5, ge=0, le=1)
    alpha2: float = setting(0.25, ge=0, le=1)
    temperature: float = setting(1.0, gt=0)  # tau of both teacher terms; tau^2 also multiplies the introspection term (reference)
    beta: float = setting(0.1, ge=0)
    begin: int = setting(40, ge=0)
    init: Literal["gaussian", "uniform", "zero"] = "uniform"
    clamp_init: bool = False
    attack_bn: Literal["eval", "train"] = "train"


@register
class IAD2(Method):
    """IAD-II: IAD with a robust and a clean teacher, both on x', reliability-weighted after warm-up.

    Paper: Zhu et al., ICLR 2022; reference ``ZFancy/IAD`` ``IAD-II.py`` (spec single-teacher 2.5,
    last paragraph). Roles: ``robust_teacher`` = the adversarially trained T, ``clean_teacher`` =
    the standard-trained T_st. Inner: ARD's (student CE-PGD, SUM, uniform start not clamped,
    train-mode BN; S(x') is the 11th train-mode forward). ``w_i = softmax(T(x'_i))[y_i]^beta``,
    constant. Outer, with e the 0-indexed epoch:

    - e >= begin: ``(1-a1-a2)*CE(S(x'), y) + a1*tau^2*[(1/B) sum_i w_i KL(T_tau(x'_i) || S_tau(x'_i)) + (1/B) sum_i (1-w_i) KL(S(x_i) || S(x'_i))] + a2*tau^2*BATCHMEAN KL(T_st,tau(x') || S_tau(x'))``
    - e < begin: the same without w (teacher term unweighted) and without the introspection term.

    Unlike IAD-I, the CE term is on the adversarial S(x'), the robust-teacher term *is* weighted
    by w, and tau^2 multiplies the introspection term too (which itself has no temperature).
    The introspection target softmax(S(x)) is a fresh train-mode clean forward, not detached.
    BN updates per batch: 11 during warm-up, 12 after (the reference has no forward that only
    updates BN, so there is no ``bn_side_forward`` switch).
    """

    name = "iad-ii"
    roles = ("clean_teacher", "robust_teacher")
    Params = IAD2Params

    def perturb(self, student, x, y):
        return ard_inner(self, student, x, y)

    def loss(self, student, x, x_adv, y):
        tau, a1, a2 = self.p.temperature, self.p.alpha1, self.p.alpha2
        introspect = self.epoch >= self.p.begin
        robust_logits = self.teacher_logits("robust_teacher", x_adv)  # no-grad targets first
        clean_logits = self.teacher_logits("clean_teacher", x_adv)
        logits_adv = student(x_adv)
        robust_kl = kl_div(logits_adv / tau, tempered_probs(robust_logits, tau), "none")
        clean_kl = kl_div(logits_adv / tau, tempered_probs(clean_logits, tau), "batchmean")
        ce = F.cross_entropy(logits_adv, y)
        logs = {"loss_ce": ce.item(), "loss_clean_teacher": clean_kl.item(), "loss_robust_teacher": robust_kl.mean().item()}
        if introspect:
            w = reliability_weights(robust_logits, y, self.p.beta)
            intro = ((1 - w) * kl_div(logits_adv, F.softmax(student(x), dim=1), "none")).mean()
            robust_term = (w * robust_kl).mean() + intro
            logs["loss_introspect"] = intro.item()
            logs["reliability"] = w.mean().item()
        else:
            robust_term = robust_kl.mean()
        loss = (1 - a1 - a2) * ce + a1 * tau * tau * robust_term + a2 * tau * tau * clean_kl
        logs["loss"] = loss.item()
        return loss, logs
