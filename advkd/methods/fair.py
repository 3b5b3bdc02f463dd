"""Fair-ARD (Yue et al., NeurIPS 2023): class-difficulty re-weighting of ARD and RSLAD.

Both variants count, during the inner maximisation of every batch, how many PGD iterates
``x'_0 .. x'_{K-1}`` each sample is still classified correctly at (``kappa_i``; the final iterate
is not counted), sum it per class over the epoch, and turn the per-class means into class
weights for the NEXT epoch (multi-teacher spec 4.1, [FAIR] ``Fair-ARD.py`` / ``Fair-RSLAD.py``):

    kappa_bar_c = sum_{i: y_i = c} kappa_i / n_c
    w~_c = (kappa_bar_c + s)^(-beta),   w_c = w~_c * C / sum_c w~_c,   w_c <- clamp(w_c, 5/6, 5/2)

Epoch 1 uses w = 1. Every per-sample loss term is multiplied by ``w_{y_i}``. The per-class sums
and counts are all-reduced across ranks before use (spec pitfall 24).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from advkd.attacks.modes import training_mode
from advkd.core.distributed import all_reduce_sum
from advkd.core.errors import AdvkdError
from advkd.core.settings import setting
from advkd.methods.base import InnerParams, Method, side_forward
from advkd.methods.losses import kl_div, tempered_probs
from advkd.methods.registry import register


def class_weights(kappa_bar: torch.Tensor, *, beta: float, smoothing: float, low: float, high: float) -> torch.Tensor:
    """Fair-ARD class weights from per-class mean robustness counts (spec 4.1).

    ``(kappa_bar + smoothing)^(-beta)``, rescaled to sum to the number of entries, THEN clamped to
    ``[low, high]`` (so the clamped weights no longer sum exactly to C). With ``smoothing = 0``
    (Fair-RSLAD) a class with ``kappa_bar = 0`` has an infinite raw weight; the limit is used:
    the normalised mass C is shared equally by those classes, the others get 0 (before the clamp).
    """
    raw = (kappa_bar.double() + smoothing).pow(-beta)
    infinite = torch.isinf(raw)
    if infinite.any():
        raw = infinite.double()
    total = raw.sum()
    if not torch.isfinite(total) or total <= 0:
        raw = torch.ones_like(raw)
        total = raw.sum()
    weights = raw * raw.numel() / total
    return weights.clamp(low, high)


class ClassWeighted(Method):
    """Shared state of the Fair-ARD variants: kappa accumulation and next-epoch class weights."""

    def __init__(self, teachers, params, *, num_classes, dataset):
        super().__init__(teachers, params, num_classes=num_classes, dataset=dataset)
        if params.weight_min > params.weight_max:
            raise AdvkdError(f"method.weight_min ({params.weight_min}) must be <= method.weight_max ({params.weight_max})")
        self.weights: list[float] = [1.0] * num_classes  # epoch 1 uses w = 1
        self.kappa_mean: list[float | None] = [None] * num_classes  # last epoch's kappa_bar (None: class not seen)
        self._kappa_sum: torch.Tensor | None = None  # (C,) float64, this epoch
        self._count: torch.Tensor | None = None  # (C,) float64, this epoch

    # ------------------------------------------------------------------ per batch
    def _counter(self, y: torch.Tensor):
        """A (B,) kappa tensor and a closure that adds 1 where the student predicts y."""
        kappa = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)

        def observe(logits: torch.Tensor) -> None:
            kappa.add_((logits.detach().argmax(1) == y).double())

        return kappa, observe

    def _record(self, kappa: torch.Tensor, y: torch.Tensor) -> None:
        c = self.num_classes
        if self._kappa_sum is None:
            self._kappa_sum = torch.zeros(c, dtype=torch.float64, device=y.device)
            self._count = torch.zeros(c, dtype=torch.float64, device=y.device)
        elif self._kappa_sum.device != y.device:
            self._kappa_sum, self._count = self._kappa_sum.to(y.device), self._count.to(y.device)
        self._kappa_sum.index_add_(0, y, kappa.to(self._kappa_sum.device))
        self._count.add_(torch.bincount(y, minlength=c).double())

    def sample_weights(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``w_{y_i}`` for each sample, from the weights fixed at the end of the previous epoch."""
        return torch.tensor(self.weights, dtype=dtype, device=y.device)[y]

    # ------------------------------------------------------------------ per epoch
    def end_epoch(self, epoch: int, next_rate_factor: float) -> None:
        """Turn this epoch's (all-reduced) kappa sums into the class weights of the next epoch.

        ``class_stats=reference`` (default, [FAIR] ``Fair-ARD.py`` / ``Fair-RSLAD.py`` after the
        epoch loop): kappa_bar_c = kappa_sum_c / (N / C) with N the samples of the epoch, for all
        C classes, so a class absent from the epoch has kappa_bar 0 and the largest weight.
        ``class_stats=counted``: kappa_sum_c / n_c over the classes seen this epoch, normalised
        among themselves; an absent class keeps its previous weight. The two agree on balanced
        data (full CIFAR); they differ on the unbalanced subsets ``--train-subset`` makes.
        """
        c = self.num_classes
        if self._kappa_sum is None:
            self._kappa_sum = torch.zeros(c, dtype=torch.float64)
            self._count = torch.zeros(c, dtype=torch.float64)
        stats = torch.cat([self._kappa_sum, self._count])
        all_reduce_sum(stats)
        kappa_sum, count = stats[:c].cpu(), stats[c:].cpu()
        seen = count > 0 if self.p.class_stats == "counted" else torch.ones(c, dtype=torch.bool)
        if count.sum() > 0:
            if self.p.class_stats == "counted":
                kappa_bar = kappa_sum[seen] / count[seen]
            else:  # the reference's N / C (equal to n_c on balanced data)
                kappa_bar = kappa_sum / (count.sum() / c)
            new = torch.tensor(self.weights, dtype=torch.float64)
            new[seen] = class_weights(kappa_bar, beta=self.p.beta, smoothing=self.p.smoothing, low=self.p.weight_min, high=self.p.weight_max)
            self.weights = new.tolist()
            mean: list[float | None] = [None] * c
            for k, v in zip(seen.nonzero().flatten().tolist(), kappa_bar.tolist()):
                mean[k] = v
            self.kappa_mean = mean
        self._kappa_sum = None
        self._count = None

    def state_dict(self) -> dict[str, Any]:
        zeros = [0.0] * self.num_classes
        return {
            "weights": list(self.weights),
            "kappa_mean": list(self.kappa_mean),
            "kappa_sum": zeros if self._kappa_sum is None else self._kappa_sum.tolist(),
            "count": zeros if self._count is None else self._count.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = {"weights", "kappa_mean", "kappa_sum", "count"}
        if set(state) != keys:
            raise AdvkdError(f"method {self.name}: resume state has keys {sorted(state)}, expected {sorted(keys)}")
        for k in keys:
            if len(state[k]) != self.num_classes:
                raise AdvkdError(f"method {self.name}: resume state {k} has {len(state[k])} classes, the dataset has {self.num_classes}")
        self.weights = [float(v) for v in state["weights"]]
        self.kappa_mean = [None if v is None else float(v) for v in state["kappa_mean"]]
        if any(state["count"]):
            self._kappa_sum = torch.tensor(state["kappa_sum"], dtype=torch.float64)
            self._count = torch.tensor(state["count"], dtype=torch.float64)
        else:
            self._kappa_sum = self._count = None

    def epoch_metrics(self) -> dict[str, Any]:
        return {"class_weights": list(self.weights), "kappa_mean": list(self.kappa_mean)}


# ============================================================================ Fair-ARD


@dataclass
class FairARDParams(InnerParams):
    """Defaults: [FAIR] ``Fair-ARD.py`` on CIFAR-10 (multi-teacher spec 4.1-4.2).

    alpha = 1 and temperature = 30 are the CIFAR-10 defaults (B-MTARD's ARD settings for
    CIFAR-100 / Tiny-ImageNet, T = 5 and alpha = 0.95, presumably apply too: UNCONFIRMED, spec
    4.2). beta = 2 (README command and default), weight clamp [5/6, 5/2] after normalisation,
    smoothing 1e-5 inside the power (spec 4.1). class_stats: ``reference`` divides each class's
    kappa sum by N/C and weighs all C classes, as the reference does; ``counted`` divides by the
    counted n_c and leaves absent classes at their previous weight (identical on balanced data
    such as full CIFAR; see ``end_epoch``). Inner: the ARD attack (uniform start not clamped, CE
    SUM, student in train mode).
    """

    alpha: float = setting(1.0, ge=0, le=1)
    temperature: float = setting(30.0, gt=0)
    beta: float = setting(2.0, ge=0)
    weight_min: float = setting(5.0 / 6.0, gt=0)
    weight_max: float = setting(2.5, gt=0)
    smoothing: float = setting(1e-5, ge=0)
    class_stats: Literal["reference", "counted"] = "reference"  # reference (sum / (N/C), all classes) | counted (sum / n_c, seen classes)
    init: Literal["gaussian", "uniform", "zero"] = "uniform"  # x + U(-eps, eps) ...
    clamp_init: bool = False  # ... not clamped before the first forward
    attack_bn: Literal["eval", "train"] = "train"  # the reference attacks with the student in train mode
    bn_side_forward: bool = True  # with alpha = 1 the clean S(x) forward still runs (BN side effect)


@register
class FairARD(ClassWeighted):
    """Fair-ARD: ARD with class weights from per-class PGD robustness counts (next-epoch reweighting).

    Paper: Yue et al., "Revisiting Adversarial Robustness Distillation from the Perspective of
    Robust Fairness", NeurIPS 2023; code [FAIR] ``Fair-ARD.py`` (multi-teacher spec 4.1-4.2).
    Inner: ARD's attack (student in TRAIN mode, start x + U(-eps, eps) not clamped, 10 x 2/255
    on the summed student CE vs. the labels), counting per sample the iterates x'_0..x'_{K-1}
    classified correctly (kappa_i). Outer, the teacher on CLEAN x (eval, no grad):

        KL_i = (1/C) sum_k q_ik (log q_ik - log p_ik),  q = softmax(T(x)/T),  p = softmax(S(x*)/T)
        L = alpha * T^2 * (1/B) sum_i w_{y_i} KL_i + (1 - alpha) * (1/B) sum_i w_{y_i} CE(S(x_i), y_i)

    (the ``nn.KLDivLoss()`` default per sample divides by C: effective factor T^2/C, pitfall 2).
    T = 30, alpha = 1: only the KL term is active, yet the clean forward still runs (BN). The class
    weights w are those computed at the end of the previous epoch (1 in epoch 1), see
    :func:`class_weights`; beta = 2, clamp [5/6, 5/2] after the sum-to-C normalisation.
    The reference divides the kappa sums by N/C (it assumes balanced classes), which is the
    default here (``method.class_stats=counted`` divides by the counted class sizes), and its lr
    helper never applies the second decay (a schedule matter, spec 4.2).
    """

    name = "fair-ard"
    roles = ("teacher",)
    Params = FairARDParams

    def perturb(self, student, x, y):
        kappa, observe = self._counter(y)

        def attack_loss(xa):
            logits = student(xa)
            observe(logits)  # called once per iterate x'_0 .. x'_{K-1}, never on the final one
            return F.cross_entropy(logits, y, reduction="sum")

        with training_mode(student, train=self.p.attack_bn == "train"):
            x_adv = self.attack(attack_loss, x)
        self._record(kappa, y)
        return x_adv

    def loss(self, student, x, x_adv, y):
        tau = self.p.temperature
        teacher = tempered_probs(self.teacher_logits("teacher", x), tau)  # no-grad target first
        logits_adv = student(x_adv)
        w = self.sample_weights(y, logits_adv.dtype)
        kl = kl_div(logits_adv / tau, teacher, "none") / self.num_classes  # per sample, mean over classes
        distill = (w * kl).mean()
        loss = self.p.alpha * tau * tau * distill
        logs = {"loss_distill": distill.item()}
        if self.p.alpha < 1:
            ce = (w * F.cross_entropy(student(x), y, reduction="none")).mean()
            loss = loss + (1 - self.p.alpha) * ce
            logs["loss_ce"] = ce.item()
        elif self.p.bn_side_forward:
            side_forward(student, x)
        logs["loss"] = loss.item()
        return loss, logs


# ============================================================================ Fair-RSLAD


@dataclass
class FairRSLADParams(InnerParams):
    """Defaults: [FAIR] ``Fair-RSLAD.py`` (multi-teacher spec 4.1, 4.3).

    alpha = 5/6 weights the adversarial term (clean term 1 - alpha = 1/6), as RSLAD. smoothing = 0:
    Fair-RSLAD omits the +1e-5 of Fair-ARD (spec 4.1). kl_scale multiplies the whole loss; 1 by
    default (no CIFAR-100 x10 scaling is attested for Fair-RSLAD, UNCONFIRMED; RSLAD's own
    CIFAR-100 script uses 10). beta, weight clamp and class_stats as fair-ard.
    """

    alpha: float = setting(5.0 / 6.0, ge=0, le=1)
    kl_scale: float = setting(1.0, ge=0)
    beta: float = setting(2.0, ge=0)
    weight_min: float = setting(5.0 / 6.0, gt=0)
    weight_max: float = setting(2.5, gt=0)
    smoothing: float = setting(0.0, ge=0)
    class_stats: Literal["reference", "counted"] = "reference"  # reference (sum / (N/C), all classes) | counted (sum / n_c, seen classes)
    init: Literal["gaussian", "uniform", "zero"] = "gaussian"  # x + 0.001*N(0, I) ...
    clamp_init: bool = False  # ... not clamped before the first forward
    bn_side_forward: bool = True  # with alpha = 1 the clean S(x) forward still runs (BN side effect)


@register
class FairRSLAD(ClassWeighted):
    """Fair-RSLAD: RSLAD with Fair-ARD's per-class weights on every per-sample KL row.

    Paper: Yue et al., NeurIPS 2023; code [FAIR] ``Fair-RSLAD.py`` (multi-teacher spec 4.3).
    Inner (spec 1.3): student in eval mode, start x + 0.001*N(0,I) not clamped, 10 x 2/255
    maximising SUM KL(q || S(x')) with q = softmax(T(x)) the teacher's soft label of CLEAN x
    (tau = 1, teacher once per batch); kappa counted at x'_0..x'_{K-1}. Outer (train mode,
    S(x*) then S(x)):

        KLm_w(q || S(u)) = (1/(B*C)) sum_i w_{y_i} sum_k q_ik (log(q_ik + 1e-5) - log p_S(u)_ik)
        L = kl_scale * [alpha * KLm_w(q || S(x*)) + (1 - alpha) * KLm_w(q || S(x))]

    alpha = 5/6. Weights: as fair-ard but without the +1e-5 inside the power (smoothing = 0).
    Schedule (preset matter): SGD lr 0.1, momentum 0.9, wd 2e-4, Nesterov, 300 epochs, x0.1 at
    215/260/285.
    """

    name = "fair-rslad"
    roles = ("teacher",)
    Params = FairRSLADParams

    def perturb(self, student, x, y):
        target = F.softmax(self.teacher_logits("teacher", x), dim=1)
        kappa, observe = self._counter(y)

        def attack_loss(xa):
            logits = student(xa)
            observe(logits)
            return kl_div(logits, target, "sum")

        with training_mode(student, train=False):
            x_adv = self.attack(attack_loss, x)
        self._record(kappa, y)
        return x_adv

    def loss(self, student, x, x_adv, y):
        target = F.softmax(self.teacher_logits("teacher", x), dim=1)
        log_target = torch.log(target + 1e-5)

        def weighted_klm(logits, w):
            return (w[:, None] * target * (log_target - F.log_softmax(logits, dim=1))).mean()

        logits_adv = student(x_adv)
        w = self.sample_weights(y, logits_adv.dtype)
        adv = weighted_klm(logits_adv, w)
        loss = self.p.alpha * adv
        logs = {"loss_adv": adv.item()}
        if self.p.alpha < 1:
            nat = weighted_klm(student(x), w)
            loss = loss + (1 - self.p.alpha) * nat
            logs["loss_nat"] = nat.item()
        elif self.p.bn_side_forward:
            side_forward(student, x)
        loss = self.p.kl_scale * loss
        logs["loss"] = loss.item()
        return loss, logs
