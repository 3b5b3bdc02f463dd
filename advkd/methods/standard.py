"""Teacher-free training: natural, PGD-AT (AdaAD-repo ``Plain_Madry``) and TRADES.

They pretrain teachers and also train the student baselines of both papers' tables.
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
from advkd.methods.losses import batch_accuracy, kl_div
from advkd.methods.registry import register


@dataclass
class NaturalParams:
    """Natural training has no inner maximisation and no hyper-parameters beyond the schedule."""


@register
class Natural(Method):
    """Natural (standard) training: CE on clean images (spec single-teacher 2.1).

    ``L = CE(S(x), y)`` (batch mean), student in train mode. Produces clean teachers.
    """

    name = "natural"
    Params = NaturalParams

    def perturb(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def loss(self, student, x, x_adv, y):
        logits = student(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.item(), "train_acc": batch_accuracy(logits, y)}


@dataclass
class PGDATParams(InnerParams):
    """Defaults: AdaAD repo ``AT_helper.Madry_PGD`` (spec single-teacher 2.2a)."""

    init: Literal["gaussian", "uniform", "zero"] = "gaussian"  # x + 0.001*N(0, I) ...
    clamp_init: bool = True  # ... clamped to [0, 1] (unlike TRADES / AdaAD)
    attack_bn: Literal["eval", "train"] = "eval"  # BN mode during the attack: eval (AdaAD repo, BoT --BNeval) | train (Rice et al.)
    bn_side_forward: bool = True  # keep the reference's clean train-mode logging forward (it updates BN stats)


@register
class PGDAT(Method):
    """PGD-AT (Madry et al.) as the AdaAD repo runs it: CE-PGD on the student, CE on x* (spec 2.2a).

    Inner: student in eval mode, start x + 0.001*N(0,I) clamped to [0,1], 10 steps of 2/255 on
    CE (mean), eps 8/255. Outer: ``CE(S(x*), y)`` in train mode, then the reference's clean
    forward S(x) that only logs accuracy but updates BN running statistics (pitfall 8;
    ``method.bn_side_forward=false`` drops it). The paper runs 110 epochs with decays at 100/105.
    """

    name = "pgd-at"
    Params = PGDATParams

    def perturb(self, student, x, y):
        return self.student_ce_attack(student, x, y, train=self.p.attack_bn == "train")

    def loss(self, student, x, x_adv, y):
        logits_adv = student(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if self.p.bn_side_forward:
            side_forward(student, x)
        return loss, {"loss": loss.item(), "train_adv_acc": batch_accuracy(logits_adv, y)}


@dataclass
class TRADESParams(InnerParams):
    """Defaults: TRADES code with the AdaAD paper's settings (spec single-teacher 2.3).

    The official repo uses eps 0.031 and step 0.007 (``--preset official``); beta = 6 is the
    official value, UNCONFIRMED for the AdaAD paper's run.
    """

    beta: float = setting(6.0, ge=0)
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"
    clamp_init: bool = False
    bn_side_forward: bool = True  # the reference runs S(x) twice in train mode (CE, then KL target)


@register
class TRADES(Method):
    """TRADES (Zhang et al. 2019): CE(S(x)) + beta * KL(S(x) || S(x*)) (spec single-teacher 2.3).

    Inner: student in eval mode, start x + 0.001*N(0,I) (not clamped), maximise
    SUM KL(softmax(S(x)) || softmax(S(x'))). The reference recomputes the clean target at every
    step in eval mode; it does not depend on x', so computing it once is exactly equivalent.
    Outer: ``CE(S(x), y) + beta * BATCHMEAN KL(softmax(S(x)) || softmax(S(x*)))`` with gradients
    through both sides (nothing detached), student in train mode. The reference's second clean
    forward (the KL target) only changes BN statistics in train mode; it is kept by default.
    """

    name = "trades"
    Params = TRADESParams

    def perturb(self, student, x, y):
        with training_mode(student, train=False):
            with torch.no_grad():
                target = F.softmax(student(x), dim=1)
            return self.attack(lambda xa: kl_div(student(xa), target, "sum"), x)

    def loss(self, student, x, x_adv, y):
        logits = student(x)
        natural = F.cross_entropy(logits, y)
        logits_adv = student(x_adv)
        if self.p.bn_side_forward:  # the reference's second S(x): same output in train mode, only BN moves
            side_forward(student, x)
        robust = kl_div(logits_adv, F.softmax(logits, dim=1), "batchmean")
        loss = natural + self.p.beta * robust
        return loss, {"loss": loss.item(), "loss_natural": natural.item(), "loss_robust": robust.item(), "train_acc": batch_accuracy(logits, y)}

