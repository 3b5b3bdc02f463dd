"""The learning-rate schedule and the optimiser of a run: what ``lr`` is at each batch, and which
optimiser steps with it (the references' SGD, or AdamW for the reduced scales)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advkd.training.config import TrainConfig


def lr_at(cfg: TrainConfig, t: float) -> float:
    """Learning rate at training time ``t``, in epochs completed (``t = 0`` is the first batch).

    A milestone ``m`` counts completed epochs, as PyTorch's ``MultiStepLR`` and every reference
    script do: the rate drops once ``t >= m``, so with ``lr_step=epoch`` (``t`` = epochs
    completed before this one, set once per epoch as the AdaAD repo does) epoch ``m + 1`` is the
    first at the lower rate, and with ``lr_step=iteration`` (SCORE's ``epoch + (i + 1) / n``,
    set before every batch) the last batch of epoch ``m`` already is.
    """
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t / cfg.epochs))
    return cfg.lr * cfg.lr_gamma ** sum(1 for m in cfg.milestones if t >= m)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def warmup_factor(cfg: TrainConfig, t: float) -> float:
    """The linear warm-up's share of the lr at training time ``t`` (epochs completed, the batch
    included: the first batch of a 40-batch epoch is t = 1/40); 1 once ``warmup_epochs`` are done."""
    return 1.0 if cfg.warmup_epochs <= 0 or t >= cfg.warmup_epochs else t / cfg.warmup_epochs


OPTIMIZER_BUILDERS: dict[str, Callable[[TrainConfig, Any], torch.optim.Optimizer]] = {
    "sgd": lambda cfg, params: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov),
    "adamw": lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay),
}


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimiser (``cfg.optimizer``: the references' SGD, or AdamW for the reduced scales)."""
    return OPTIMIZER_BUILDERS[cfg.optimizer](cfg, model.parameters())
