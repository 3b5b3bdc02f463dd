"""Losses that attacks maximise. Inputs are logits (B x C); C is always read from the logits.

- :func:`cross_entropy` — the CE of every PGD/FGSM in the specs.
- :func:`cw_margin` — the CW-inf loss of the B-MTARD evaluation (multi-teacher spec §10.1):
  per example ``-max(z_y - max_{k!=y} z_k + kappa, 0)``, written in the common form
  (``correct = sum(onehot*z)``, ``wrong = max((1-onehot)*z - 1e4*onehot)``). The widely copied
  helper hard-codes ``num_classes=10`` (multi-teacher §12 pitfall 21); here C comes from ``z``.
- :func:`margin` — ``z_y - max_{k!=y} z_k`` per example (negative means misclassified).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")

# Subtracted from the true-class entry so that it never wins the "best other class" max.
_TARGET_MULT = 1e4


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction {reduction!r} is not one of {', '.join(_REDUCTIONS)}")


def cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy, ``reduction`` in {"mean", "sum", "none"}."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not one of {', '.join(_REDUCTIONS)}")
    return F.cross_entropy(logits, y, reduction=reduction)


def _one_hot(logits: Tensor, y: Tensor, num_classes: int | None) -> Tensor:
    c = logits.shape[-1]
    if num_classes is not None and num_classes != c:
        raise ValueError(f"num_classes={num_classes} but the logits have {c} classes")
    return F.one_hot(y, c).to(logits.dtype)


def cw_margin(
    logits: Tensor,
    y: Tensor,
    *,
    kappa: float,
    num_classes: int | None = None,
    reduction: str = "sum",
) -> Tensor:
    """CW-inf loss to MAXIMISE: ``-relu(z_y - max_{k!=y} z_k + kappa)`` per example.

    ``reduction`` defaults to "sum" as in the GAIRAT-style ``cwloss`` that the B-MTARD
    evaluation copies; for sign steps the reduction does not matter.
    """
    onehot = _one_hot(logits, y, num_classes)
    correct = (onehot * logits).sum(dim=1)
    wrong = ((1.0 - onehot) * logits - _TARGET_MULT * onehot).max(dim=1).values
    return _reduce(-torch.relu(correct - wrong + kappa), reduction)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example ``z_y - max_{k!=y} z_k`` (exact: the true class is masked with -inf)."""
    correct = logits.gather(1, y[:, None]).squeeze(1)
    mask = F.one_hot(y, logits.shape[-1]).bool()
    wrong = logits.masked_fill(mask, float("-inf")).max(dim=1).values
    return correct - wrong
