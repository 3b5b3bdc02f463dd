"""FGSM with a random start (Wong, Rice and Kolter, ICLR 2020): one signed-gradient step of
``alpha * eps`` from a uniform start in the eps-ball, projected back into it."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from advkd.plugins import Attack, param


@dataclasses.dataclass(frozen=True)
class FGSMRSParams:
    alpha: float = param(1.25, "step size as a multiple of eps", min=0.0)


class RandomStartFGSM(Attack):
    """FGSM-RS: uniform start in the eps-ball, one signed step of alpha * eps, projected."""

    Params = FGSMRSParams

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = self.eps.value
        start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y), start)
        step = start.detach() + self.hparams.alpha * eps * grad.sign()
        return torch.min(torch.max(step, x - eps), x + eps).clamp(0, 1)
