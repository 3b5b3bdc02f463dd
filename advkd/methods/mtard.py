"""B-MTARD (Zhao et al., TPAMI 2024) and MTARD (Zhao et al., ECCV 2022): two teachers, balanced.

A clean teacher distils the student on clean inputs, a robust teacher on the student's adversarial
inputs. B-MTARD balances the two with Entropy-Based Balance (teacher temperatures, EBB) and
Normalization Loss Balance (loss weights, NLB); MTARD is the same method with NLB only and both
temperatures fixed at 1 (multi-teacher spec sections 2-3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from advkd.core import distributed
from advkd.core.errors import AdvkdError
from advkd.core.settings import setting
from advkd.methods.base import InnerParams, Method
from advkd.methods.losses import klm
from advkd.methods.registry import register

# The Zhao et al. code smooths the teacher log with this constant in the KL and in the EBB entropy.
SMOOTHING = 1e-5

STATE_KEYS = ("tau_adv", "tau_nat", "w_adv", "w_nat", "loss_adv_0", "loss_nat_0")


@dataclass
class BMTARDParams(InnerParams):
    """Defaults: official B-MTARD CIFAR-10 script [EXT] and paper section 4.1 (spec 3.2-3.7).

    Inner maximisation (spec 1.2/3.2): CE-PGD on the student in eval mode, start x + 0.001*N(0,I)
    not clamped, 10 steps of 2/255, eps 8/255.

    EBB (spec 3.4): ``tau_adv_init = tau_nat_init = 1`` [EXT]; the paper sets a lost symbol to 2
    for MobileNet-v2 on CIFAR-10, most likely both initial teacher temperatures (UNCONFIRMED:
    ``--set method.tau_adv_init=2 --set method.tau_nat_init=2``). Clamp range [1, 10] and
    ``tau_rate`` (eta_tau) = 0.001 per batch [EXT, paper 4.1]. ``ebb=false`` keeps both temperatures
    at their initial values.

    NLB (spec 3.5): ``w_adv_init = w_nat_init = 0.5``, ``weight_rate`` (eta_w) = 0.025 per batch,
    ``nlb_beta`` (beta, ``bert`` in [ECCV]) = 1 [EXT, ECCV, paper Table VIII]. ``nlb=false`` keeps
    the weights at their initial values (the fixed-0.5 two-teacher baseline of paper Fig. 3).

    Both rates are multiplied by the trainer's lr / initial lr, which reproduces [EXT]'s x0.1 decay
    of eta_w and eta_tau together with the lr after epochs 215, 260, 285 (spec pitfall 9).

    ``kl_scale`` multiplies both KL terms; 0 = auto: 10 on CIFAR-100 (as MTARD/RSLAD's CIFAR-100
    scripts do; UNCONFIRMED for B-MTARD, spec 0.3), 1 otherwise (Tiny-ImageNet: UNCONFIRMED).
    It does not change EBB or NLB (the ratios cancel it) but it is a 10x gradient scale.
    """

    init: Literal["gaussian", "uniform", "zero"] = "gaussian"
    init_std: float = setting(0.001, ge=0)
    clamp_init: bool = False
    ebb: bool = True
    nlb: bool = True
    tau_adv_init: float = setting(1.0, gt=0)
    tau_nat_init: float = setting(1.0, gt=0)
    tau_min: float = setting(1.0, gt=0)
    tau_max: float = setting(10.0, gt=0)
    tau_rate: float = setting(0.001, ge=0)
    nlb_beta: float = setting(1.0, ge=0)
    weight_rate: float = setting(0.025, ge=0)
    w_adv_init: float = setting(0.5, ge=0, le=1)
    w_nat_init: float = setting(0.5, ge=0, le=1)
    kl_scale: float = setting(0.0, ge=0)


def _sign(v: float) -> float:
    return float((v > 0) - (v < 0))


@register
class BMTARD(Method):
    """B-MTARD: clean + robust teacher, Entropy-Based Balance of temperatures, Normalization Loss Balance.

    Paper: Zhao, Wang, Wei, "Mitigating Accuracy-Robustness Trade-off via Balanced Multi-Teacher
    Adversarial Distillation", TPAMI 2024 (arXiv 2306.16170), Eqs. 3-4 and 12-21; official code
    ``zhaoshiji123/MTARD-extension`` [EXT] (multi-teacher spec section 3).

    Inner (Eq. 4, spec 1.2): x' maximises CE(S(x'), y), student in eval mode, start
    x + 0.001*N(0,I) (not clamped), 10 x 2/255, project to the 8/255 ball then clamp to [0,1]; the
    teachers take no part.

    Outer (Eq. 21, spec 3.3/3.6), student forwards S(x') then S(x) in train mode (BN updated on
    x' first), teachers in eval mode without gradient, robust teacher on x', clean teacher on x::

        L_adv = KLm(softmax(T_adv(x') / tau_adv) || S(x'))
        L_nat = KLm(softmax(T_nat(x)  / tau_nat) || S(x))
        L     = w_adv * L_adv + w_nat * L_nat

    KLm = mean over B*C of q*(log(q + 1e-5) - log_softmax(s)) (spec 0.3; = KL_batchmean / C plus a
    constant), student temperature 1, no tau^2, times ``kl_scale`` (10 on CIFAR-100 by default,
    UNCONFIRMED for B-MTARD).

    Then, every batch, in this order (spec 3.4-3.6):

    - EBB (Eqs. 12-13): E = mean over B*C of q*log(q + 1e-5) at the CURRENT temperatures (robust
      teacher on x', clean teacher on x); ``tau_adv -= eta_tau * sign(H_adv - H_nat)``,
      ``tau_nat -= eta_tau * sign(H_nat - H_adv)`` with H = -C*E, simultaneously, clamped to
      [1, 10]. The new temperatures apply from the NEXT batch. [EXT] writes the sign as
      ``sign(E_adv/E_nat - 1)``: identical while E < 0 (always, except for a teacher so saturated
      that the 1e-5 smoothing makes E >= 0, where the ratio divides by zero or flips sign; the
      entropy-gap form is used here).
    - NLB (Eqs. 15-20): L_i(0) = the losses of the very first batch (never refreshed);
      r_i = L_i / L_i(0); targets r_i^beta / sum_j r_j^beta; EMA ``w_i -= eta_w * (w_i - target_i)``;
      clamp >= 0; renormalise to sum 1. Done BEFORE the backward: L above uses the updated weights.

    eta_tau = 0.001, eta_w = 0.025 per batch, both times lr / initial lr (x0.1 at 215/260/285 as in
    [EXT]). Under DDP the entropies and losses that drive EBB/NLB are summed over ranks first, so
    every rank holds the same temperatures and weights; ``loss_adv``/``loss_nat`` logs are the local
    batch values, ``r_*``/``entropy_*`` the all-rank ones. The paper's equations were lost in text
    extraction; the reconstruction and the code agree (spec 3.1).
    """

    name = "bmtard"
    roles = ("clean_teacher", "robust_teacher")
    Params = BMTARDParams

    def __init__(self, teachers, params, *, num_classes, dataset):
        super().__init__(teachers, params, num_classes=num_classes, dataset=dataset)
        p = self.p
        if not 0 < p.tau_min <= p.tau_max:
            raise AdvkdError(f"method.tau_min/tau_max must satisfy 0 < tau_min <= tau_max, got {p.tau_min}, {p.tau_max}")
        for key in ("tau_adv_init", "tau_nat_init"):
            value = getattr(p, key)
            if not p.tau_min <= value <= p.tau_max:
                raise AdvkdError(
                    f"method.{key}={value} is outside [tau_min, tau_max] = [{p.tau_min}, {p.tau_max}]; "
                    f"widen it with --set method.tau_min=... / method.tau_max=..."
                )
        if p.tau_rate < 0 or not 0 <= p.weight_rate <= 1:
            raise AdvkdError(f"method.tau_rate must be >= 0 and method.weight_rate in [0, 1], got {p.tau_rate}, {p.weight_rate}")
        if p.w_adv_init < 0 or p.w_nat_init < 0 or p.w_adv_init + p.w_nat_init <= 0:
            raise AdvkdError(f"method.w_adv_init/w_nat_init must be >= 0 and not both 0, got {p.w_adv_init}, {p.w_nat_init}")
        self.tau_adv = float(p.tau_adv_init)
        self.tau_nat = float(p.tau_nat_init)
        self.w_adv = float(p.w_adv_init)
        self.w_nat = float(p.w_nat_init)
        self.loss_adv_0: float | None = None
        self.loss_nat_0: float | None = None

    # ------------------------------------------------------------------ inner maximisation
    def perturb(self, student, x, y):
        return self.student_ce_attack(student, x, y)

    # ------------------------------------------------------------------ outer objective
    def loss(self, student, x, x_adv, y):
        # Teacher targets first: frozen no-grad forwards, so the order changes no number, and none
        # of their activations coexist with the student's autograd graph (lower peak memory).
        q_adv = F.softmax(self.teacher_logits("robust_teacher", x_adv) / self.tau_adv, dim=1)
        q_nat = F.softmax(self.teacher_logits("clean_teacher", x) / self.tau_nat, dim=1)
        logits_adv = student(x_adv)  # train mode: BN updated on x' first ...
        logits_nat = student(x)  # ... then on x (spec 3.6 steps 3-4)
        scale = self.kl_scale
        loss_adv = scale * klm(logits_adv, q_adv)
        loss_nat = scale * klm(logits_nat, q_nat)

        # All statistics that steer the balancers, summed over ranks in one reduction:
        # entropy numerators and element counts, per-rank loss * count and counts.
        n_adv, n_nat = float(q_adv.numel()), float(q_nat.numel())
        with torch.no_grad():
            stats = torch.stack(
                [
                    (q_adv * torch.log(q_adv + SMOOTHING)).sum(),
                    q_adv.new_tensor(n_adv),
                    (q_nat * torch.log(q_nat + SMOOTHING)).sum(),
                    q_nat.new_tensor(n_nat),
                    loss_adv.detach() * n_adv,
                    loss_nat.detach() * n_nat,
                ]
            ).double()
            stats = distributed.all_reduce_sum(stats).tolist()
        e_adv, e_nat = stats[0] / stats[1], stats[2] / stats[3]
        l_adv, l_nat = stats[4] / stats[1], stats[5] / stats[3]

        tau_adv_used, tau_nat_used = self.tau_adv, self.tau_nat
        if self.p.ebb:
            self._entropy_balance(e_adv, e_nat)
        r_adv, r_nat = self._loss_balance(l_adv, l_nat)

        loss = self.w_adv * loss_adv + self.w_nat * loss_nat
        c = q_adv.shape[1]
        logs = {
            "loss": loss.item(),
            "loss_adv": loss_adv.item(),
            "loss_nat": loss_nat.item(),
            "r_adv": r_adv,
            "r_nat": r_nat,
            "entropy_adv": -c * e_adv,  # mean Shannon entropy in nats (with the 1e-5 smoothing)
            "entropy_nat": -c * e_nat,
            "tau_adv": tau_adv_used,  # the temperatures this batch's loss used
            "tau_nat": tau_nat_used,
            "w_adv": self.w_adv,  # the (updated) weights this batch's loss used
            "w_nat": self.w_nat,
        }
        return loss, logs

    def _entropy_balance(self, e_adv: float, e_nat: float) -> None:
        """EBB (Eqs. 12-13): cool the higher-entropy teacher, heat the other, by eta_tau each.

        With E = -H/C < 0, [EXT]'s sign(E_adv/E_nat - 1) = sign(H_adv - H_nat) = sign(E_nat - E_adv).
        """
        rate = self.p.tau_rate * self.rate_factor
        gap = e_nat - e_adv  # = (H_adv - H_nat) / C
        lo, hi = self.p.tau_min, self.p.tau_max
        self.tau_adv = min(max(self.tau_adv - rate * _sign(gap), lo), hi)
        self.tau_nat = min(max(self.tau_nat - rate * _sign(-gap), lo), hi)

    def _loss_balance(self, l_adv: float, l_nat: float) -> tuple[float, float]:
        """NLB (Eqs. 15-20); returns the relative losses (r_adv, r_nat).

        L(0) is recorded from the first batch even with ``nlb=false`` so r_* can be logged.
        """
        if self.loss_adv_0 is None or self.loss_nat_0 is None:
            self.loss_adv_0, self.loss_nat_0 = l_adv, l_nat
        r_adv = l_adv / self.loss_adv_0 if self.loss_adv_0 > 0 else 1.0
        r_nat = l_nat / self.loss_nat_0 if self.loss_nat_0 > 0 else 1.0
        if not self.p.nlb:
            return r_adv, r_nat
        beta = self.p.nlb_beta
        t_adv, t_nat = r_adv**beta, r_nat**beta
        total = t_adv + t_nat
        if not (total > 0 and math.isfinite(total)):
            return r_adv, r_nat  # degenerate losses (0 or inf): no information, keep the weights
        t_adv, t_nat = t_adv / total, t_nat / total
        rate = self.p.weight_rate * self.rate_factor
        w_adv = max(self.w_adv - rate * (self.w_adv - t_adv), 0.0)
        w_nat = max(self.w_nat - rate * (self.w_nat - t_nat), 0.0)
        norm = w_adv + w_nat
        if norm > 0:
            self.w_adv, self.w_nat = w_adv / norm, w_nat / norm
        return r_adv, r_nat

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "tau_adv": self.tau_adv,
            "tau_nat": self.tau_nat,
            "w_adv": self.w_adv,
            "w_nat": self.w_nat,
            "loss_adv_0": self.loss_adv_0,
            "loss_nat_0": self.loss_nat_0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(STATE_KEYS):
            raise AdvkdError(f"method {self.name}: resume state has keys {sorted(state)}, expected {sorted(STATE_KEYS)}")
        self.tau_adv = float(state["tau_adv"])
        self.tau_nat = float(state["tau_nat"])
        self.w_adv = float(state["w_adv"])
        self.w_nat = float(state["w_nat"])
        self.loss_adv_0 = None if state["loss_adv_0"] is None else float(state["loss_adv_0"])
        self.loss_nat_0 = None if state["loss_nat_0"] is None else float(state["loss_nat_0"])


@dataclass
class MTARDParams(BMTARDParams):
    """Defaults: official MTARD code [ECCV] (spec section 2): B-MTARD without EBB.

    ``ebb = False`` with both temperatures at 1 (no temperature appears in [ECCV]); NLB as in
    B-MTARD with beta (``bert``) = 1, eta_w = 0.025 decayed x0.1 with the lr at 215/260/285,
    weights 0.5/0.5, L(0) from the first batch. kl_scale auto = 10 on CIFAR-100 (the ECCV
    CIFAR-100 script multiplies both KL terms by 10), 1 otherwise.
    """

    ebb: bool = False


@register
class MTARD(BMTARD):
    """MTARD: clean + robust teacher with Normalization Loss Balance only (temperatures fixed at 1).

    Paper: Zhao et al., "Enhanced Accuracy and Robustness via Multi-Teacher Adversarial
    Distillation", ECCV 2022; official code ``zhaoshiji123/MTARD`` [ECCV] (multi-teacher spec
    section 2). B-MTARD's paper identifies MTARD with its "Baseline + NLB" ablation. Same inner
    maximisation (CE-PGD, student in eval mode, x + 0.001*N(0,I) start, 10 x 2/255) and outer loss
    ``w_adv * KLm(T_adv(x') || S(x')) + w_nat * KLm(T_nat(x) || S(x))`` with teacher temperatures 1.
    The ECCV code updates w_nat by the EMA and sets w_adv = 1 - w_nat; B-MTARD updates both, clamps
    at 0 and renormalises. Because the targets and the weights both sum to 1 the EMA preserves the
    sum and the two updates are algebraically identical (spec section 2), so this class reuses
    B-MTARD's update with EBB switched off.
    """

    name = "mtard"
    Params = MTARDParams
