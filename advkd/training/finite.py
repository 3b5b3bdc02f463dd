"""Stopping a run whose loss or weights became inf/nan before anything poisoned is written.

Every rank takes the same decision (flags are summed over ranks), and the check of the weights
and optimizer state is one fused reduction cheap enough to run every ``FINITE_EVERY`` steps.
"""
from __future__ import annotations

import torch
from torch import nn

from advkd.core.distributed import all_reduce_sum
from advkd.core.errors import AdvkdError, spell
from advkd.models.checkpoint import unwrap
from advkd.training.setup import Setup

FINITE_EVERY = 50  # optimizer steps between two finite-weights checks (and one before every commit)


def nonfinite_flag(model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """A 0-d float tensor on the model's device: 1 if any float parameter, buffer or optimizer
    state entry is inf or nan, else 0. No host sync.

    One fused reduction: ``torch._foreach_norm(..., inf)`` (max |x| per tensor; inf and nan
    propagate, and unlike a 2-norm it cannot overflow on large finite weights) and one ``any``
    over the per-tensor maxima; it reads every tensor once (memory-bound). Measured on one CPU
    thread, batch 32 of 32x32 images, SGD with momentum: ResNet-18 (164 tensors) 0.14 s per check
    against 5.5 s per plain forward/backward/step (2.6%; a PGD-10 step costs 11 passes, so ~0.25%),
    tinycnn 0.6 ms against 26 ms. Run every ``FINITE_EVERY`` steps plus once per epoch, that is
    ~0.05% of a plain step and ~0.005% of a PGD-10 one; whole tiny runs did not differ beyond noise.
    """
    tensors = [t for t in (*unwrap(model).parameters(), *unwrap(model).buffers()) if t.is_floating_point()]
    for entries in optimizer.state.values():
        tensors += [v for v in entries.values() if torch.is_tensor(v) and v.is_floating_point()]
    if not tensors:
        return torch.zeros(())
    first = tensors[0]
    maxima = torch.stack([m.to(first.device, torch.float32) for m in torch._foreach_norm(tensors, float("inf"))])
    return (~maxima.isfinite()).any().to(torch.float32)


def require_finite(setup: Setup, optimizer: torch.optim.Optimizer, number: int, where: str = "") -> None:
    """Stop (AdvkdError) when the weights or optimizer state became inf/nan, on every rank alike
    (the flags are summed over ranks, one host sync)."""
    if on_any_rank(nonfinite_flag(setup.model, optimizer)):
        raise AdvkdError(nonfinite_message(setup, number, where))


def nonfinite_message(setup: Setup, number: int, where: str = "") -> str:
    return (f"the weights became inf/nan during epoch {number}{where}, so epoch {number} was not saved; lower the lr "
            f"({spell('--lr or --set lr=...', 'lr=...')}) or check the method settings; completed epochs stay resumable in {setup.path}")


def finite_everywhere(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks stop together otherwise)."""
    return not on_any_rank(torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0]))


def on_any_rank(flag: torch.Tensor) -> bool:
    """True when ``flag`` (a 0/1 float tensor) is set on any rank: one all-reduce, one host sync,
    so every rank takes the same decision."""
    return all_reduce_sum(flag).item() > 0
