"""Distillation divergences with the exact reductions of the reference codes.

All of them compute KL(teacher || student): the teacher (or clean-student) distribution is the
*target*, as ``nn.KLDivLoss(log_softmax(student), softmax(teacher))`` does in every reference
implementation, whatever direction the papers write (spec single-teacher pitfall 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "batchmean", "elemmean", "none")


def kl_div(student_logits: torch.Tensor, target_probs: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """KL(target || softmax(student_logits)).

    ``sum``: over batch and classes; ``batchmean``: sum / B (the true mean per-sample KL);
    ``elemmean``: sum / (B*C), what ``nn.KLDivLoss()`` returns by default; ``none``: per sample (B,).
    Gradients flow into ``target_probs`` too unless the caller detaches it (TRADES and AdaAD rely on that).
    """
    elem = F.kl_div(F.log_softmax(student_logits, dim=1), target_probs, reduction="none")
    if reduction == "sum":
        return elem.sum()
    if reduction == "batchmean":
        return elem.sum() / elem.shape[0]
    if reduction == "elemmean":
        return elem.mean()
    if reduction == "none":
        return elem.sum(dim=1)
    raise ValueError(f"unknown KL reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def klm(student_logits: torch.Tensor, target_probs: torch.Tensor, smoothing: float = 1e-5) -> torch.Tensor:
    """The element-mean KL of the Zhao et al. / RSLAD code family (multi-teacher spec section 0.3).

    mean over B*C of q * (log(q + 1e-5) - log_softmax(s)). Equals KL_batchmean / C plus a bias that
    does not depend on the student, so its gradient is that of the true KL divided by C.
    """
    return (target_probs * (torch.log(target_probs + smoothing) - F.log_softmax(student_logits, dim=1))).mean()


def tempered_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return F.softmax(logits / temperature, dim=1)


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Training-batch accuracy in percent: the one unit of every accuracy advkd logs and records."""
    return 100.0 * (logits.argmax(1) == y).float().mean().item()
