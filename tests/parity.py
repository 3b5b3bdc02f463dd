"""Three-batch parity harness: an advkd method run as the training loop runs it, step by step.

Shared by the ``test_parity_*.py`` modules (a plain module, not a test file). Each of those
writes, per method, a *reference* function in the order of operations of the method's reference
script and compares it with :func:`run_method` on the same float64 nets, batches and random
seeds: the adversarial points, the loss, the student's parameters and BatchNorm buffers after
every optimizer step, and the method state. float64 so that a real difference cannot hide in
rounding (``assert_same`` uses 1e-10).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advkd.methods import Method

C = 5  # classes
SHAPE = (3, 4, 4)  # input shape
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 2e-4
TOL = 1e-10


def parity_net(seed: int) -> nn.Module:
    """A float64 conv net with two BatchNorms (so BN order effects show), seeded."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, C),
    )
    return net.double()


def teacher_net(seed: int, scale: float = 3.0) -> nn.Module:
    """A float64 eval-mode teacher whose outputs are confident enough to matter (``scale``)."""
    net = parity_net(seed)
    with torch.no_grad():
        net[-1].weight.mul_(scale)
        net[-1].bias.mul_(scale)
    return net.eval().requires_grad_(False)


def parity_batches(seed: int = 0, n: int = 8, count: int = 3, labels: list[list[int]] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` float64 batches of ``n`` inputs in [0, 1]; ``labels`` fixes the labels per batch
    (for unbalanced or class-missing cases), else they are drawn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        x = torch.rand(n, *SHAPE, generator=g, dtype=torch.float64)
        y = torch.tensor(labels[i]) if labels else torch.randint(0, C, (n,), generator=g)
        out.append((x, y))
    return out


@dataclass
class Step:
    """What one optimizer step leaves behind."""

    x_adv: torch.Tensor
    loss: float
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)  # method state after the step (and after end_epoch on an epoch's last batch)


def snapshot(model: nn.Module, x_adv: torch.Tensor, loss: torch.Tensor | float, state: dict[str, Any] | None = None) -> Step:
    return Step(
        x_adv.detach().clone(),
        float(loss.detach()) if torch.is_tensor(loss) else float(loss),
        {k: v.detach().clone() for k, v in model.named_parameters()},
        {k: v.detach().clone() for k, v in model.named_buffers()},
        copy.deepcopy(state or {}),
    )


def sgd(model: nn.Module, *, lr: float = LR, nesterov: bool = False) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=nesterov)


def run_method(
    method: Method,
    student: nn.Module,
    epochs: list[list[tuple[torch.Tensor, torch.Tensor]]],
    *,
    seed: int = 0,
    lr: float = LR,
    nesterov: bool = False,
    rate_factor: Callable[[int], float] = lambda epoch: 1.0,
) -> list[Step]:
    """Run ``method`` as ``advkd.training.loop.train_epoch`` does: ``epochs[e]`` are the batches of
    0-indexed epoch ``e``; ``torch.manual_seed(seed + k)`` before the k-th batch overall (the
    reference functions seed the same way). The state recorded on an epoch's last step is the
    one after ``end_epoch``."""
    optimizer = sgd(student, lr=lr, nesterov=nesterov)
    steps: list[Step] = []
    k = 0
    for e, batches in enumerate(epochs):
        method.start_epoch(e, rate_factor(e))
        student.train()
        for i, (x, y) in enumerate(batches):
            torch.manual_seed(seed + k)
            k += 1
            x_adv = method.perturb(student, x, y)
            loss, _ = method.loss(student, x, x_adv, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i == len(batches) - 1:
                method.end_epoch(e, rate_factor(e + 1))
            steps.append(snapshot(student, x_adv, loss, method.state_dict()))
    return steps


def assert_same(ours: list[Step], ref: list[Step], *, tol: float = TOL, state_keys: tuple[str, ...] | None = None) -> None:
    """Every step equal within ``tol``: x_adv, loss, parameters, BN buffers (incl.
    ``num_batches_tracked``), and the method state keys the reference tracks (``state_keys``;
    None compares the reference's keys)."""
    assert len(ours) == len(ref), f"{len(ours)} steps against the reference's {len(ref)}"
    for k, (a, b) in enumerate(zip(ours, ref)):
        where = f"step {k + 1}"
        torch.testing.assert_close(a.x_adv, b.x_adv, atol=tol, rtol=0, msg=lambda m: f"{where} x_adv: {m}")
        assert abs(a.loss - b.loss) <= tol * max(1.0, abs(b.loss)), f"{where} loss {a.loss!r} != reference {b.loss!r}"
        assert a.buffers.keys() == b.buffers.keys()
        for name in b.buffers:
            torch.testing.assert_close(a.buffers[name], b.buffers[name], atol=tol, rtol=0, msg=lambda m: f"{where} buffer {name}: {m}")
        for name in b.params:
            torch.testing.assert_close(a.params[name], b.params[name], atol=tol, rtol=0, msg=lambda m: f"{where} param {name}: {m}")
        for key in state_keys if state_keys is not None else tuple(b.state):
            torch.testing.assert_close(
                torch.as_tensor(a.state[key], dtype=torch.float64), torch.as_tensor(b.state[key], dtype=torch.float64),
                atol=tol, rtol=0, msg=lambda m: f"{where} method state {key}: {m}",
            )
