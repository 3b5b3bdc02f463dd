"""ConfKD: RSLAD's robust soft labels, each example weighted by how sure the teacher is of it.

RSLAD (Zi et al. 2021) distils the teacher's clean soft labels into the student on adversarial and
clean inputs. A teacher that is unsure of an image (a flat distribution) gives a soft label that
carries little; ConfKD weights each example's KL terms by the teacher's top-class probability on
the clean image, normalised to mean 1 over the batch, and raised to ``gamma`` (0: RSLAD's
weights, up to the reduction: ConfKD takes the batch mean of per-example KLs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advkd.plugins import InnerParams, Method, kl_div, training_mode


@dataclass
class ConfKDParams(InnerParams):
    alpha: float = 5.0 / 6.0  # weight of the adversarial term (RSLAD's); the clean term gets 1 - alpha
    gamma: float = 1.0  # sharpness of the confidence weight; 0 = every example counts the same


class ConfKD(Method):
    """ConfKD: RSLAD's KL-PGD and soft labels, each example weighted by the teacher's confidence."""

    name = "confkd"
    roles = ("teacher",)
    Params = ConfKDParams

    def perturb(self, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.softmax(self.teacher_logits("teacher", x), dim=1)
        with training_mode(student, train=False):
            return self.attack(lambda xa: kl_div(student(xa), target, "sum"), x)

    def loss(self, student: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        target = F.softmax(self.teacher_logits("teacher", x), dim=1)
        weight = target.max(dim=1).values.pow(self.p.gamma)
        weight = weight / weight.mean()
        adv = kl_div(student(x_adv), target, "none")  # per example, summed over classes
        nat = kl_div(student(x), target, "none")
        loss = (weight * (self.p.alpha * adv + (1 - self.p.alpha) * nat)).mean()
        return loss, {"loss_adv": adv.mean().item(), "loss_nat": nat.mean().item(), "weight_min": weight.min().item()}
