"""Each method's loss against a hand-written computation of its spec formula, on tiny models.

The inner maximisation start is made deterministic with ``method.init=zero``.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkd.attacks.engine import random_start
from advkd.core.errors import AdvkdError
from advkd.methods import METHODS, build, list_methods
from advkd.methods.losses import kl_div, klm

from tiny_nets import C, bn_net, linear_net


def manual_kl(p: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p || softmax(q_logits)) written out: sum_c p_c (log p_c - log q_c)."""
    logq = q_logits - torch.logsumexp(q_logits, dim=1, keepdim=True)
    return (p * (torch.log(p) - logq)).sum(dim=1)


# ----------------------------------------------------------------------------- divergences


def test_kl_direction_is_teacher_to_student():
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.5]])
    p_t = F.softmax(teacher, 1)
    p_s = F.softmax(student, 1)
    expected = (p_t * (p_t.log() - p_s.log())).sum()
    reverse = (p_s * (p_s.log() - p_t.log())).sum()
    got = kl_div(student, p_t, "sum")
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, reverse, atol=1e-3)


def test_kl_reductions_relate_by_batch_and_classes():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 7, generator=g)
    t = F.softmax(torch.randn(4, 7, generator=g), 1)
    total = kl_div(s, t, "sum")
    assert torch.allclose(kl_div(s, t, "batchmean"), total / 4)
    assert torch.allclose(kl_div(s, t, "elemmean"), total / 28)
    assert torch.allclose(kl_div(s, t, "none").sum(), total)
    with pytest.warns(UserWarning):  # torch warns that 'mean' is the element mean: exactly the reference's reduction
        reference = nn.KLDivLoss()(F.log_softmax(s, 1), t)
    assert torch.allclose(kl_div(s, t, "elemmean"), reference)


def test_klm_is_elementmean_with_smoothed_teacher_log():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 4, generator=g)
    t = F.softmax(torch.randn(3, 4, generator=g), 1)
    expected = (t * (torch.log(t + 1e-5) - F.log_softmax(s, 1))).sum() / 12
    assert torch.allclose(klm(s, t), expected)
    # its gradient is that of the true KL divided by C
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(klm(s1, t), s1)
    (g2,) = torch.autograd.grad(kl_div(s2, t, "batchmean") / 4, s2)
    assert torch.allclose(g1, g2, atol=1e-6)


# ----------------------------------------------------------------------------- losses by hand


def one_step_zero_init(model: nn.Module, x, y, loss_fn, step: float, eps: float) -> torch.Tensor:
    """x' = clip(x + step * sign(grad), x-eps, x+eps, [0,1]) from x itself (init=zero, 1 step)."""
    xa = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model(xa)), xa)
    out = x + step * g.sign()
    return torch.min(torch.max(out, x - eps), x + eps).clamp(0, 1)


def test_natural_is_clean_cross_entropy(batch):
    x, y = batch
    s = linear_net(0)
    m = build("natural")
    x_adv = m.perturb(s, x, y)
    assert x_adv is x
    loss, logs = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, F.cross_entropy(s(x), y))
    assert logs["loss"] == pytest.approx(loss.item())


def test_pgd_at_perturb_and_loss_by_hand(batch):
    x, y = batch
    s = linear_net(0)
    m = build("pgd-at", init="zero", steps=1, step_size="2/255")
    x_adv = m.perturb(s, x, y)
    expected = one_step_zero_init(s, x, y, lambda z: F.cross_entropy(z, y), 2 / 255, 8 / 255)
    assert torch.allclose(x_adv, expected)
    loss, _ = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, F.cross_entropy(s(x_adv), y))


def test_trades_loss_by_hand(batch):
    x, y = batch
    s = linear_net(0)
    # KL(S(x) || S(x')) has a zero gradient at x' = x, hence TRADES' Gaussian start (reproduced here)
    m = build("trades", init="gaussian", steps=1, beta=6.0)
    torch.manual_seed(3)
    x_adv = m.perturb(s, x, y)
    torch.manual_seed(3)
    x0 = random_start(x, eps=8 / 255, init="gaussian", init_std=0.001, clamp=False)
    p_nat = F.softmax(s(x), 1).detach()
    xa = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(manual_kl(p_nat, s(xa)).sum(), xa)
    expected_adv = torch.min(torch.max(x0 + 2 / 255 * g.sign(), x - 8 / 255), x + 8 / 255).clamp(0, 1)
    assert torch.allclose(x_adv, expected_adv)
    loss, logs = m.loss(s, x, x_adv, y)
    p = F.softmax(s(x), 1)
    expected = F.cross_entropy(s(x), y) + 6.0 * manual_kl(p, s(x_adv)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert logs["loss_robust"] == pytest.approx(manual_kl(p, s(x_adv)).mean().item(), abs=1e-7)


def test_trades_gradient_flows_through_the_clean_side(batch):
    x, y = batch
    s = linear_net(0)
    m = build("trades", init="zero", steps=1, beta=1.0)
    x_adv = (x + 0.05).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    grad_full = torch.autograd.grad(loss, s[1].weight)[0]
    detached = F.cross_entropy(s(x), y) + kl_div(s(x_adv), F.softmax(s(x), 1).detach(), "batchmean")
    grad_detached = torch.autograd.grad(detached, s[1].weight)[0]
    assert not torch.allclose(grad_full, grad_detached)


@pytest.mark.parametrize("reduction,divisor", [("elemmean", 6 * C), ("batchmean", 6)])
def test_ard_loss_by_hand(batch, reduction, divisor):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    tau = 4.0
    m = build("ard", {"teacher": t}, init="zero", steps=1, temperature=tau, reduction=reduction, alpha=0.75)
    x_adv = m.perturb(s, x, y)
    expected_adv = one_step_zero_init(s, x, y, lambda z: F.cross_entropy(z, y, reduction="sum"), 2 / 255, 8 / 255)
    assert torch.allclose(x_adv, expected_adv)
    loss, _ = m.loss(s, x, x_adv, y)
    q = F.softmax(t(x) / tau, 1)  # teacher on CLEAN x
    distill = manual_kl(q, s(x_adv) / tau).sum() / divisor
    expected = 0.75 * tau * tau * distill + 0.25 * F.cross_entropy(s(x), y)
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("dataset,scale", [("cifar10", 1.0), ("cifar100", 10.0)])
def test_rslad_loss_by_hand(batch, dataset, scale):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("rslad", {"teacher": t}, init="zero", steps=1, dataset=dataset)
    x_adv = m.perturb(s, x, y)
    q = F.softmax(t(x), 1)
    expected_adv = one_step_zero_init(s, x, y, lambda z: manual_kl(q, z).sum(), 2 / 255, 8 / 255)
    assert torch.allclose(x_adv, expected_adv)
    loss, _ = m.loss(s, x, x_adv, y)

    def km(z):
        return (q * (torch.log(q + 1e-5) - F.log_softmax(z, 1))).mean()

    expected = scale * (5 / 6 * km(s(x_adv)) + 1 / 6 * km(s(x)))
    assert torch.allclose(loss, expected, atol=1e-6)


# ----------------------------------------------------------------------------- reference BN behaviour


def bn_updates(model: nn.Module) -> int:
    return int(model[1].num_batches_tracked)


@pytest.mark.parametrize(
    "name,teachers,params,expected",
    [
        ("pgd-at", False, {}, 2),  # eval-mode attack; adversarial forward + the logging clean forward
        ("pgd-at", False, {"bn_side_forward": False}, 1),
        ("trades", False, {}, 3),  # S(x), S(x'), S(x) again
        ("trades", False, {"bn_side_forward": False}, 2),
        ("ard", True, {}, 12),  # 10 train-mode attack forwards + final S(x*) + clean S(x)
        ("ard", True, {"bn_side_forward": False}, 11),
        ("rslad", True, {}, 2),  # eval-mode attack; S(x*) then S(x)
    ],
)
def test_batchnorm_updates_match_reference(batch, name, teachers, params, expected):
    x, y = batch
    s = bn_net(0)
    s.train()
    t = {"teacher": bn_net(1)} if teachers else {}
    m = build(name, t, **params)
    x_adv = m.perturb(s, x, y)
    assert s.training, "perturb must restore the student's mode"
    m.loss(s, x, x_adv, y)
    assert bn_updates(s) == expected


def test_teachers_are_frozen_and_run_once_per_batch(batch):
    x, y = batch
    s, t = bn_net(0), bn_net(1)
    t.train()
    calls = []
    t.register_forward_hook(lambda *a: calls.append(1))
    m = build("rslad", {"teacher": t})
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    x_adv = m.perturb(s, x, y)
    m.loss(s, x, x_adv, y)
    assert len(calls) == 1
    assert int(t[1].num_batches_tracked) == 0


def test_inner_loops_leave_parameter_grads_untouched(batch):
    x, y = batch
    s, t = bn_net(0), bn_net(1)
    for name in list_methods():
        m = build(name, {r: t for r in METHODS.get(name).roles})
        m.perturb(s, x, y)
        assert all(p.grad is None for p in s.parameters()), name


@pytest.mark.parametrize("init", ["gaussian", "uniform", "zero"])
def test_init_is_selectable_and_stays_in_ball(batch, init):
    x, y = batch
    s = linear_net(0)
    m = build("pgd-at", init=init, steps=0)
    x0 = m.perturb(s, x, y)
    assert (x0 - x).abs().max() <= 8 / 255 + 1e-6
    if init == "zero":
        assert torch.equal(x0, x)
    else:
        assert not torch.equal(x0, x)


# ----------------------------------------------------------------------------- registry and validation


def test_roles_are_checked():
    t = linear_net(1)
    with pytest.raises(AdvkdError, match=r"^method ard needs teachers=\{'teacher': \.\.\.\}$"):  # Python names, not flags
        build("ard")
    with pytest.raises(AdvkdError, match=r"^method trades does not take teachers=\{'teacher': \.\.\.\}; it takes no teacher$"):
        build("trades", {"teacher": t})


def test_unknown_and_mistyped_hyperparameters_are_rejected():
    with pytest.raises(AdvkdError, match="unknown key 'betta'"):
        build("trades", betta=1.0)
    with pytest.raises(AdvkdError, match="beta must be a number"):
        build("trades", beta="high")
    with pytest.raises(AdvkdError, match="init must be one of"):
        build("trades", init="normal")
    with pytest.raises(AdvkdError, match="outside"):
        build("trades", eps="300/255")


def test_every_method_documents_itself():
    for entry in METHODS:
        assert entry.help, entry.name
        assert entry.obj.__doc__ and len(entry.obj.__doc__) > 80, entry.name


def test_eps_zero_means_no_perturbation(batch):
    x, y = batch
    s = linear_net(0)
    m = build("pgd-at", eps="0", init="uniform")
    assert torch.allclose(m.perturb(s, x, y), x)
    assert math.isclose(m.eps, 0.0)
