"""AdaAD (Huang et al., CVPR 2023) and AdaIAD (AdaAD + IAD-I), as ``boyellow/AdaAD`` runs them.

What defines AdaAD is its inner maximisation: the adversarial point maximises the teacher-student
divergence *at the adversarial point*, with the teacher re-evaluated at every step and the input
gradient flowing through both networks (spec single-teacher 2.8, pitfall 2). A teacher output
that is detached or computed once on clean x gives RSLAD's inner problem instead.
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
from advkd.methods.iad import introspective_tail
from advkd.methods.losses import kl_div, tempered_probs
from advkd.methods.registry import register


def adaad_inner(method: Method, student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """AdaAD's inner problem: maximise SUM KL(softmax(T(x')) || softmax(S(x'))) over the eps-ball.

    ``T(x')`` is recomputed at every step, with autograd on and *not* detached, so the input
    gradient passes through the teacher too (its parameters are frozen; only x' gets a gradient).
    Student in eval mode (``attack_bn``), teacher in eval mode; start x + 0.001*N(0, I), not
    clamped (``AT_helper.adaad_inner_loss``). Modes are restored afterwards.
    """
    with training_mode(student, train=method.p.attack_bn == "train"), training_mode(teacher, train=False):
        return method.attack(lambda xa: kl_div(student(xa), F.softmax(teacher(xa), dim=1), "sum"), x)


@dataclass
class AdaADParams(InnerParams):
    """Defaults: ``boyellow/AdaAD`` ``main.py`` / ``AT_helper.py`` (spec single-teacher 2.8).

    alpha = 1 (``--AdaAD_alpha``; paper section 4): only the adversarial term is active.
    reduction "auto" = the reference's per-dataset choice: BATCHMEAN on CIFAR-100 (explicit
    (1/B)*sum), ELEMMEAN (``nn.KLDivLoss()`` default, divides by B*C) on CIFAR-10 and any other
    dataset. No temperature (the paper's Eq. 11 has one; the code does not). The inner start is
    x + 0.001*N(0, I), not clamped; the attack runs the student in eval mode.
    """

    alpha: float = setting(1.0, ge=0, le=1)  # weight of KL(T(x*) || S(x*)); (1 - alpha) weighs KL(T(x) || S(x))
    reduction: Literal["auto", "elemmean", "batchmean"] = "auto"  # auto: batchmean on cifar100, elemmean otherwise
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"  # x + 0.001*N(0, I) ...
    clamp_init: bool = False  # ... not clamped before the first forward
    attack_bn: Literal["eval", "train"] = "eval"  # student BN mode during the attack (reference: BN_eval=True)
    bn_side_forward: bool = True  # the clean train-mode S(x) runs even when alpha = 1 (BN side effect)


@register
class AdaAD(Method):
    """AdaAD: inner max of KL(T(x') || S(x')) through BOTH networks, then KL(T(x*) || S(x*)).

    Paper: Huang et al., "Boosting Accuracy and Robustness of Student Models via Adaptive
    Adversarial Distillation", CVPR 2023, Eq. 9-11; reference ``boyellow/AdaAD`` (``AT_helper.py``
    ``adaad_inner_loss``, ``main.py`` branch ``AdaAD``); spec single-teacher 2.8.

    Inner: student and teacher in eval mode, start x + 0.001*N(0, I) not clamped, 10 steps of
    2/255 (eps 8/255) maximising ``SUM_{i,c} KL(softmax(T(x')) || softmax(S(x')))`` with the
    teacher recomputed at every step and not detached: the teacher runs once per attack step
    with autograd on (10 teacher forwards and input-gradient backwards per batch).
    Outer, student in train mode, clean S(x) then S(x*) (the reference's order; both update BN
    statistics), teacher outputs under no_grad:
    ``alpha * KL_red(T(x*) || S(x*)) + (1 - alpha) * KL_red(T(x) || S(x))``.
    Defaults (``main.py``): alpha = 1, KL_red = ELEMMEAN on CIFAR-10 and BATCHMEAN on CIFAR-100,
    no temperature. Where the code deviates from the paper: Eq. 11 writes KL(S || T) and a
    temperature on the adversarial term; the code uses the teacher as the target, no
    temperature and no tau^2 (followed here). With alpha = 1 the clean S(x) still runs for its
    BatchNorm side effect (``bn_side_forward=false`` drops it; T(x) is then not needed at all).
    With eps = 0, x* = x and the loss is the clean KL(T(x) || S(x)) (paper section 3.3).
    """

    name = "adaad"
    roles = ("teacher",)
    Params = AdaADParams

    @property
    def reduction(self) -> str:
        if self.p.reduction != "auto":
            return self.p.reduction
        return "batchmean" if self.dataset == "cifar100" else "elemmean"

    def perturb(self, student, x, y):
        return adaad_inner(self, student, self.teachers["teacher"], x)

    def loss(self, student, x, x_adv, y):
        red = self.reduction
        # x* is fixed after perturb, so T(x*) is a constant target: one no-grad forward per batch,
        # taken before the student's graph exists
        target_adv = F.softmax(self.teacher_logits("teacher", x_adv), dim=1)
        target_nat = F.softmax(self.teacher_logits("teacher", x), dim=1) if self.p.alpha != 1 else None
        if self.p.alpha != 1:
            logits_nat = student(x)
        elif self.p.bn_side_forward:
            side_forward(student, x)
        logits_adv = student(x_adv)
        adv = kl_div(logits_adv, target_adv, red)
        loss = self.p.alpha * adv
        logs = {"loss_adv": adv.item()}
        if self.p.alpha != 1:
            nat = kl_div(logits_nat, target_nat, red)
            loss = loss + (1 - self.p.alpha) * nat
            logs["loss_nat"] = nat.item()
        logs["loss"] = loss.item()
        return loss, logs


@dataclass
class AdaIADParams(InnerParams):
    """Defaults: ``boyellow/AdaAD`` ``main.py`` branch ``AdaAD_with_IAD1`` (spec single-teacher 2.9).

    alpha = 1 (``--IAD_alpha``), beta = 0.1 (``--IAD_beta``), begin = 60 (``--IAD_begin``),
    temperature = 30 (``--temp``, tau^2 = 900 on the teacher term only): the code default, which
    the README command does not override; that the paper's runs used it is UNCONFIRMED (spec
    open item 6). BATCHMEAN for every dataset. Inner settings are AdaAD's.
    """

    alpha: float = setting(1.0, ge=0, le=1)
    temperature: float = setting(30.0, gt=0)
    beta: float = setting(0.1, ge=0)
    begin: int = setting(60, ge=0)
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"
    clamp_init: bool = False
    attack_bn: Literal["eval", "train"] = "eval"
    bn_side_forward: bool = True  # keep the reference's clean train-mode forwards whose loss weight is zero


@register
class AdaIAD(Method):
    """AdaIAD: AdaAD's adversarial points with IAD-I's reliability-weighted introspection term.

    Paper: Huang et al., CVPR 2023, section 3.2 (last paragraph; no formula given); reference
    ``boyellow/AdaAD`` ``main.py`` branch ``AdaAD_with_IAD1``; spec single-teacher 2.9.
    Inner: AdaAD's (student and teacher in eval mode, 0.001*N start not clamped, SUM
    KL(T(x') || S(x')) with the gradient through both networks). Reliability
    ``w_i = softmax(T(x*_i))[y_i]^beta``, constant. Outer, with e the 0-indexed epoch:

    - e >= begin: ``alpha*tau^2*BATCHMEAN KL(T_tau(x*) || S_tau(x*)) + alpha*(1/B)*sum_i (1-w_i)*KL(S(x_i) || S(x*_i)) + (1-alpha)*CE(S(x), y)``
    - e < begin:  ``alpha*tau^2*BATCHMEAN KL(T_tau(x*) || S_tau(x*)) + (1-alpha)*CE(S(x), y)``

    Differences from IAD-I: the teacher term uses T(x*) on the adversarial point, and BN is in
    eval mode during the attack. The introspection target softmax(S(x)) is a train-mode clean
    forward, not detached, without temperature. Defaults: alpha 1, tau 30, beta 0.1, begin 60.

    BatchNorm, as in the reference: S(x) (logged accuracy), S(x*), then after warm-up S(x) for
    the introspection target, then S(x) for the CE term (run although alpha = 1): 3 updates per
    batch during warm-up, 4 after. These clean forwards are identical in train mode, so one
    carries the gradient and the others only update BN statistics (``bn_side_forward=false``:
    only the forwards the loss needs, 1 / 2).
    """

    name = "adaiad"
    roles = ("teacher",)
    Params = AdaIADParams

    def perturb(self, student, x, y):
        return adaad_inner(self, student, self.teachers["teacher"], x)

    def loss(self, student, x, x_adv, y):
        tau = self.p.temperature
        introspect = self.epoch >= self.p.begin
        need_clean = introspect or self.p.alpha != 1
        teacher_adv = self.teacher_logits("teacher", x_adv)  # no-grad, before the student graph
        # reference clean forwards: one before S(x*), then (introspection target) and the CE one after it
        logits_nat = student(x) if need_clean else None
        if self.p.bn_side_forward and not need_clean:
            side_forward(student, x)
        logits_adv = student(x_adv)
        if self.p.bn_side_forward:
            for _ in range(1 + int(introspect)):
                side_forward(student, x)
        distill = kl_div(logits_adv / tau, tempered_probs(teacher_adv, tau), "batchmean")
        loss = self.p.alpha * tau * tau * distill
        logs = {"loss_distill": distill.item()}
        loss = introspective_tail(loss, logs, teacher_adv if introspect else None, logits_adv, logits_nat, y, self.p)
        return loss, logs
