"""AdaAD, AdaIAD, IAD-I, IAD-II and AKD against hand-written spec formulas (single-teacher 2.5-2.9).

Every expected value is written out with softmax / log here, never with the implementation's
helpers. Gaussian attack starts are reproduced with ``random_start`` under the same torch seed.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_runs import FAST
from torch import nn

from advkd.attacks.engine import random_start
from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.methods import METHODS, build
from advkd.methods.iad import reliability_weights

from tiny_nets import C, bn_net, linear_net

EPS, STEP = 8 / 255, 2 / 255


def log_sm(z: torch.Tensor) -> torch.Tensor:
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def sm(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def kl_rows(p: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p || softmax(q_logits)) = sum_c p_c (log p_c - log q_c), shape (B,)."""
    return (p * (torch.log(p) - log_sm(q_logits))).sum(dim=1)


def sign_step(x0: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    out = x0 + STEP * grad.sign()
    return torch.min(torch.max(out, x - EPS), x + EPS).clamp(0, 1)


def gaussian_start(x: torch.Tensor, seed: int, clamp: bool) -> torch.Tensor:
    torch.manual_seed(seed)
    return random_start(x, eps=EPS, init="gaussian", init_std=0.001, clamp=clamp)


def seeded_perturb(m, s, x, y, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    return m.perturb(s, x, y)


def adaad_step_by_hand(s, t, x, x0) -> torch.Tensor:
    """One AdaAD inner step from x0: gradient of SUM KL(softmax(T(x')) || softmax(S(x'))) through both nets."""
    xa = x0.clone().requires_grad_(True)
    p = sm(t(xa))  # NOT detached: the gradient passes through the teacher
    (g,) = torch.autograd.grad(kl_rows(p, s(xa)).sum(), xa)
    return sign_step(x0, x, g)


def ce_step_by_hand(s, x, y, x0, reduction: str) -> torch.Tensor:
    xa = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(s(xa), y, reduction=reduction), xa)
    return sign_step(x0, x, g)


# ----------------------------------------------------------------------------- AdaAD


@pytest.mark.parametrize("dataset,divisor", [("cifar10", 6 * C), ("cifar100", 6), ("synthetic", 6 * C)])
def test_adaad_perturb_and_loss_by_hand(batch, dataset, divisor):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("adaad", {"teacher": t}, steps=1, alpha=0.75, dataset=dataset)
    x_adv = seeded_perturb(m, s, x, y)
    x0 = gaussian_start(x, 3, clamp=False)  # 0.001*N start, NOT clamped
    assert torch.allclose(x_adv, adaad_step_by_hand(s, t, x, x0))
    loss, logs = m.loss(s, x, x_adv, y)
    adv = kl_rows(sm(t(x_adv)), s(x_adv)).sum() / divisor  # ELEMMEAN (B*C) on CIFAR-10, BATCHMEAN (B) on CIFAR-100
    nat = kl_rows(sm(t(x)), s(x)).sum() / divisor
    assert torch.allclose(loss, 0.75 * adv + 0.25 * nat, atol=1e-7)
    assert logs["loss_adv"] == pytest.approx(adv.item(), rel=1e-5)


@pytest.mark.parametrize("reduction,divisor", [("elemmean", 6 * C), ("batchmean", 6)])
def test_adaad_reduction_override(batch, reduction, divisor):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("adaad", {"teacher": t}, reduction=reduction, dataset="cifar100" if reduction == "elemmean" else "cifar10")
    x_adv = (x + 0.02).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, kl_rows(sm(t(x_adv)), s(x_adv)).sum() / divisor, atol=1e-7)


def test_adaad_multistep_matches_hand_iteration(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("adaad", {"teacher": t}, steps=3)
    x_adv = seeded_perturb(m, s, x, y, seed=11)
    xk = gaussian_start(x, 11, clamp=False)
    for _ in range(3):
        xk = adaad_step_by_hand(s, t, x, xk)
    assert torch.allclose(x_adv, xk)


class Bumped(nn.Module):
    """Teacher A plus a logit bump that is exactly zero at the clean batch x0 but not elsewhere."""

    def __init__(self, base: nn.Module, x0: torch.Tensor, k: float) -> None:
        super().__init__()
        self.base, self.k = base, k
        g = torch.Generator().manual_seed(7)
        self.register_buffer("x0", x0.clone())
        self.register_buffer("v", torch.randn(x0.shape[1:], generator=g))
        self.register_buffer("direction", torch.randn(C, generator=g))

    def forward(self, z):
        return self.base(z) + self.k * ((z - self.x0) * self.v).flatten(1).sum(1, keepdim=True) * self.direction


def test_adaad_inner_gradient_flows_through_the_teacher_unlike_rslad(batch):
    x, y = batch
    s = linear_net(0)
    teacher_a = linear_net(1)
    teacher_b = Bumped(linear_net(1), x, k=200.0)
    assert torch.equal(teacher_a(x), teacher_b(x))  # same teacher on the clean batch
    x_a = seeded_perturb(build("rslad", {"teacher": teacher_a}, steps=3), s, x, y)
    x_b = seeded_perturb(build("rslad", {"teacher": teacher_b}, steps=3), s, x, y)
    assert torch.equal(x_a, x_b), "RSLAD's target is T(x): a teacher change away from x cannot matter"
    x_a = seeded_perturb(build("adaad", {"teacher": teacher_a}, steps=3), s, x, y)
    x_b = seeded_perturb(build("adaad", {"teacher": teacher_b}, steps=3), s, x, y)
    assert not torch.equal(x_a, x_b), "AdaAD's inner gradient must pass through T(x')"


def test_adaad_eps_zero_is_the_clean_teacher_student_kl(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("adaad", {"teacher": t}, eps="0")
    x_adv = m.perturb(s, x, y)
    assert torch.allclose(x_adv, x)
    loss, logs = m.loss(s, x, x_adv, y)
    clean = kl_rows(sm(t(x)), s(x)).sum() / (6 * C)
    assert torch.allclose(loss, clean, atol=1e-7)
    assert logs["loss_adv"] == pytest.approx(clean.item(), rel=1e-5)


# ----------------------------------------------------------------------------- AdaIAD


def test_adaiad_inner_problem_is_adaads(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    a = seeded_perturb(build("adaiad", {"teacher": t}, steps=2), s, x, y)
    b = seeded_perturb(build("adaad", {"teacher": t}, steps=2), s, x, y)
    assert torch.equal(a, b)


def adaiad_by_hand(s, t, x, x_adv, y, *, alpha, tau, beta, introspect, detach_target=False):
    p_t = sm(t(x_adv) / tau)  # teacher on the ADVERSARIAL point
    distill = kl_rows(p_t, s(x_adv) / tau).mean()
    loss = alpha * tau**2 * distill + (1 - alpha) * F.cross_entropy(s(x), y)
    if introspect:
        w = sm(t(x_adv))[torch.arange(len(y)), y].detach() ** beta
        target = sm(s(x))
        if detach_target:
            target = target.detach()
        loss = loss + alpha * ((1 - w) * kl_rows(target, s(x_adv))).mean()
    return loss


def test_adaiad_switches_introspection_on_at_begin(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    hp = dict(alpha=0.75, tau=4.0, beta=0.5)
    m = build("adaiad", {"teacher": t}, alpha=0.75, temperature=4.0, beta=0.5, begin=3)
    x_adv = (x + 0.03 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))).clamp(0, 1)
    warm = adaiad_by_hand(s, t, x, x_adv, y, introspect=False, **hp)
    full = adaiad_by_hand(s, t, x, x_adv, y, introspect=True, **hp)
    assert not torch.allclose(warm, full)
    m.start_epoch(2, 1.0)
    loss, logs = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, warm, atol=1e-6)
    assert "loss_introspect" not in logs
    m.start_epoch(3, 1.0)
    loss, logs = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, full, atol=1e-6)
    assert logs["loss_introspect"] > 0


def test_adaiad_defaults():
    p = build("adaiad", {"teacher": linear_net(1)}).p
    assert (p.alpha, p.temperature, p.beta, p.begin, p.init, p.clamp_init, p.attack_bn) == (1.0, 30.0, 0.1, 60, "gaussian", False, "eval")


# ----------------------------------------------------------------------------- IAD-I


def iad_by_hand(s, t, x, x_adv, y, *, alpha, tau, beta, introspect, detach_target=False):
    p_t = sm(t(x) / tau)  # teacher on CLEAN x, not weighted by w
    loss = alpha * tau**2 * kl_rows(p_t, s(x_adv) / tau).mean() + (1 - alpha) * F.cross_entropy(s(x), y)
    if introspect:
        w = sm(t(x_adv))[torch.arange(len(y)), y].detach() ** beta  # teacher on the ADVERSARIAL input
        target = sm(s(x))
        if detach_target:
            target = target.detach()
        loss = loss + alpha * ((1 - w) * kl_rows(target, s(x_adv))).mean()
    return loss


def test_iad_perturb_is_ards_inner_problem(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("iad", {"teacher": t}, init="zero", steps=1)
    assert torch.allclose(m.perturb(s, x, y), ce_step_by_hand(s, x, y, x, "sum"))
    # default start: x + U(-eps, eps), not clamped
    m = build("iad", {"teacher": t}, steps=1)
    torch.manual_seed(4)
    x0 = random_start(x, eps=EPS, init="uniform", clamp=False)
    assert torch.allclose(seeded_perturb(m, s, x, y, seed=4), ce_step_by_hand(s, x, y, x0, "sum"))


def test_iad_switches_introspection_on_at_begin(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    hp = dict(alpha=0.75, tau=4.0, beta=0.5)
    m = build("iad", {"teacher": t}, alpha=0.75, temperature=4.0, beta=0.5, begin=5)
    x_adv = (x + 0.03 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))).clamp(0, 1)
    warm = iad_by_hand(s, t, x, x_adv, y, introspect=False, **hp)
    full = iad_by_hand(s, t, x, x_adv, y, introspect=True, **hp)
    assert not torch.allclose(warm, full)
    m.start_epoch(4, 1.0)
    loss, _ = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, warm, atol=1e-6)
    m.start_epoch(5, 1.0)
    loss, logs = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, full, atol=1e-6)
    assert 0 < logs["reliability"] <= 1


def test_iad_default_alpha_one_is_the_pure_distillation_term(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("iad", {"teacher": t}, begin=0)
    m.start_epoch(0, 1.0)
    x_adv = (x + 0.02).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss, iad_by_hand(s, t, x, x_adv, y, alpha=1.0, tau=1.0, beta=0.1, introspect=True), atol=1e-6)


@pytest.mark.parametrize("name", ["iad", "adaiad"])
def test_introspection_target_is_not_detached(batch, name):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build(name, {"teacher": t}, begin=0, beta=0.5, temperature=1.0)
    m.start_epoch(0, 1.0)
    x_adv = (x + 0.03).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    got = torch.autograd.grad(loss, s[1].weight)[0]
    by_hand = iad_by_hand if name == "iad" else adaiad_by_hand
    hp = dict(alpha=1.0, tau=1.0, beta=0.5, introspect=True)
    kept = torch.autograd.grad(by_hand(s, t, x, x_adv, y, **hp), s[1].weight)[0]
    detached = torch.autograd.grad(by_hand(s, t, x, x_adv, y, detach_target=True, **hp), s[1].weight)[0]
    assert torch.allclose(got, kept, atol=1e-6)
    assert not torch.allclose(got, detached, atol=1e-6)


# ----------------------------------------------------------------------------- IAD-II


def iad2_by_hand(s, t_rob, t_st, x, x_adv, y, *, a1, a2, tau, beta, introspect):
    z = s(x_adv)
    rob = kl_rows(sm(t_rob(x_adv) / tau), z / tau)  # both teachers see x'
    st = kl_rows(sm(t_st(x_adv) / tau), z / tau).mean()
    if introspect:
        w = sm(t_rob(x_adv))[torch.arange(len(y)), y].detach() ** beta
        robust = (w * rob).mean() + ((1 - w) * kl_rows(sm(s(x)), z)).mean()
    else:
        robust = rob.mean()
    return (1 - a1 - a2) * F.cross_entropy(z, y) + a1 * tau**2 * robust + a2 * tau**2 * st


def test_iad2_switches_introspection_on_at_begin(batch):
    x, y = batch
    s, t_rob, t_st = linear_net(0), linear_net(1), linear_net(2)
    m = build("iad-ii", {"robust_teacher": t_rob, "clean_teacher": t_st}, temperature=2.0, beta=0.5, begin=40)
    hp = dict(a1=0.5, a2=0.25, tau=2.0, beta=0.5)
    x_adv = (x + 0.03 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))).clamp(0, 1)
    warm = iad2_by_hand(s, t_rob, t_st, x, x_adv, y, introspect=False, **hp)
    full = iad2_by_hand(s, t_rob, t_st, x, x_adv, y, introspect=True, **hp)
    assert not torch.allclose(warm, full)
    m.start_epoch(39, 1.0)
    assert torch.allclose(m.loss(s, x, x_adv, y)[0], warm, atol=1e-6)
    m.start_epoch(40, 1.0)
    assert torch.allclose(m.loss(s, x, x_adv, y)[0], full, atol=1e-6)
    # swapping the roles changes the loss: the robust teacher is the one weighted by w
    swapped = build("iad-ii", {"robust_teacher": t_st, "clean_teacher": t_rob}, temperature=2.0, beta=0.5, begin=40)
    swapped.start_epoch(40, 1.0)
    assert not torch.allclose(swapped.loss(s, x, x_adv, y)[0], full, atol=1e-6)


def test_iad2_defaults_and_roles(batch):
    x, y = batch
    p = build("iad-ii", {"robust_teacher": linear_net(1), "clean_teacher": linear_net(2)}).p
    assert (p.alpha1, p.alpha2, p.temperature, p.beta, p.begin, p.init, p.attack_bn) == (0.5, 0.25, 1.0, 0.1, 40, "uniform", "train")
    with pytest.raises(AdvkdError, match=r"needs teachers=\{'clean_teacher': \.\.\.\}"):
        build("iad-ii", {"robust_teacher": linear_net(1)})
    with pytest.raises(AdvkdError, match=r"does not take teachers=\{'teacher': \.\.\.\}; it takes teachers=\{'clean_teacher': \.\.\., 'robust_teacher'"):
        build("iad-ii", {"teacher": linear_net(1), "robust_teacher": linear_net(1), "clean_teacher": linear_net(2)})


# ----------------------------------------------------------------------------- AKD


def test_akd_perturb_and_loss_by_hand(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("akd", {"teacher": t}, steps=1, beta=0.3, temperature=2.0)
    x_adv = seeded_perturb(m, s, x, y, seed=9)
    x0 = gaussian_start(x, 9, clamp=True)  # AdaAD-repo PGD-AT start: 0.001*N, clamped
    assert torch.allclose(x_adv, ce_step_by_hand(s, x, y, x0, "mean"))
    loss, _ = m.loss(s, x, x_adv, y)
    onehot = torch.zeros(6, C)
    onehot[torch.arange(6), y] = 1.0
    q = 0.3 * sm(t(x_adv) / 2.0) + 0.7 * onehot  # teacher on x*, temperature on the teacher only
    expected = -(q * log_sm(s(x_adv))).sum() / 6
    assert torch.allclose(loss, expected, atol=1e-6)


def test_akd_defaults():
    p = build("akd", {"teacher": linear_net(1)}).p
    assert (p.beta, p.temperature, p.init, p.clamp_init, p.attack_bn, p.steps) == (0.5, 1.0, "gaussian", True, "eval", 10)
    assert "placeholder" in METHODS.get("akd").__doc__.lower()


# ----------------------------------------------------------------------------- reliability weights


def test_reliability_weights_are_vectorised_and_detached():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, C, generator=g).requires_grad_(True)
    y = torch.randint(0, C, (8,), generator=g)
    w = reliability_weights(logits, y, 0.1)
    assert w.shape == (8,) and not w.requires_grad and w.grad_fn is None
    expected = torch.stack([sm(logits.detach()[i : i + 1])[0, y[i]] for i in range(8)]) ** 0.1
    assert torch.allclose(w, expected)
    # spec 2.5: p = 0.01 on the true class gives w = 0.01 ** 0.1 ~ 0.63
    one = torch.log(torch.tensor([[0.01, 0.99]]))
    assert reliability_weights(one, torch.tensor([0]), 0.1).item() == pytest.approx(0.631, abs=1e-3)


@pytest.mark.parametrize("name", ["iad", "adaiad"])
def test_no_gradient_flows_through_w(batch, name):
    """d loss / d S(x') equals the formula with w a constant (reference .item())."""
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build(name, {"teacher": t}, begin=0, beta=0.5, temperature=1.0)
    m.start_epoch(0, 1.0)
    x_adv = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1).requires_grad_(True)
    loss, _ = m.loss(s, x, x_adv, y)
    (g,) = torch.autograd.grad(loss, x_adv)
    # a differentiable w (the bug) would add d w / d x' through the teacher
    z_t = t(x_adv)
    w_live = sm(z_t)[torch.arange(6), y] ** 0.5
    target = sm(t(x) if name == "iad" else z_t).detach()  # the teacher term's target is a constant
    live = kl_rows(target, s(x_adv)).mean() + ((1 - w_live) * kl_rows(sm(s(x)), s(x_adv))).mean()
    (g_live,) = torch.autograd.grad(live, x_adv)
    const = kl_rows(target, s(x_adv)).mean() + ((1 - w_live.detach()) * kl_rows(sm(s(x)), s(x_adv))).mean()
    (g_const,) = torch.autograd.grad(const, x_adv)
    assert torch.allclose(g, g_const, atol=1e-7)
    assert (g - g_live).abs().max() > 100 * (g - g_const).abs().max() + 1e-6


# ----------------------------------------------------------------------------- BatchNorm updates


def bn_updates(model: nn.Module) -> int:
    return int(model[1].num_batches_tracked)


def teachers_for(name: str) -> dict[str, nn.Module]:
    return {role: bn_net(1 + i) for i, role in enumerate(METHODS.get(name).roles)}


@pytest.mark.parametrize(
    "name,params,epoch,expected",
    [
        ("adaad", {}, 0, 2),  # eval-mode attack; clean S(x) (side effect, alpha = 1) then S(x*)
        ("adaad", {"bn_side_forward": False}, 0, 1),
        ("adaad", {"alpha": 0.5}, 0, 2),
        ("adaiad", {}, 0, 3),  # warm-up: S(x), S(x*), S(x) of the (zero-weight) CE term
        ("adaiad", {}, 60, 4),  # + S(x) of the introspection target
        ("adaiad", {"bn_side_forward": False}, 0, 1),
        ("adaiad", {"bn_side_forward": False}, 60, 2),
        ("iad", {}, 0, 13),  # 10 train-mode attack forwards + S(x') + the unused S(x') (basicop) + clean S(x) of the CE term
        ("iad", {}, 60, 14),  # + S(x) of the introspection target
        ("iad", {"bn_side_forward": False}, 0, 11),
        ("iad", {"bn_side_forward": False}, 60, 12),
        ("iad", {"attack_bn": "eval"}, 0, 3),
        ("iad-ii", {}, 39, 11),  # 10 attack + S(x') (the CE term is on x')
        ("iad-ii", {}, 40, 12),  # + S(x) of the introspection target
        ("akd", {}, 0, 1),  # eval-mode attack, one S(x*) forward
        ("akd", {"attack_bn": "train"}, 0, 11),
    ],
)
def test_batchnorm_updates_match_reference(batch, name, params, epoch, expected):
    x, y = batch
    s = bn_net(0)
    s.train()
    teachers = teachers_for(name)
    m = build(name, teachers, **params)
    m.start_epoch(epoch, 1.0)
    x_adv = m.perturb(s, x, y)
    assert s.training and all(sub.training for sub in s.modules()), "perturb must restore the student's mode"
    m.loss(s, x, x_adv, y)
    assert bn_updates(s) == expected
    assert all(bn_updates(t) == 0 for t in teachers.values())


@pytest.mark.parametrize("name,epoch,order", [("adaad", 0, "cA"), ("adaiad", 0, "cAc"), ("adaiad", 60, "cAcc")])
def test_batchnorm_statistics_follow_the_reference_order(batch, name, epoch, order):
    """Eval-mode attacks: the running statistics equal a replay of the reference's train forwards."""
    x, y = batch
    s = bn_net(0)
    replay = copy.deepcopy(s)
    s.train()
    m = build(name, teachers_for(name))
    m.start_epoch(epoch, 1.0)
    x_adv = m.perturb(s, x, y)
    m.loss(s, x, x_adv, y)
    replay.train()
    with torch.no_grad():
        for c in order:
            replay(x if c == "c" else x_adv)
    assert torch.allclose(s[1].running_mean, replay[1].running_mean, atol=1e-7)
    assert torch.allclose(s[1].running_var, replay[1].running_var, atol=1e-7)
    # the adversarial-first order gives different statistics, so the check above can fail
    other = copy.deepcopy(bn_net(0)).train()
    with torch.no_grad():
        for c in sorted(order):
            other(x if c == "c" else x_adv)
    assert not torch.allclose(s[1].running_mean, other[1].running_mean, atol=1e-7)


# ----------------------------------------------------------------------------- teacher calls


def count_calls(module: nn.Module, log: list) -> None:
    module.register_forward_hook(lambda *a: log.append(torch.is_grad_enabled()))


@pytest.mark.parametrize(
    "name,params,epoch,inner,outer",
    [
        ("adaad", {}, 0, 10, 1),  # 10 inner steps with grad, T(x*) once
        ("adaad", {"alpha": 0.5}, 0, 10, 2),  # + T(x) for the clean term
        ("adaiad", {}, 0, 10, 1),
        ("adaiad", {}, 60, 10, 1),  # w reuses T(x*)
        ("iad", {}, 0, 0, 1),  # T(x)
        ("iad", {}, 60, 0, 2),  # T(x) and T(x') for w
        ("akd", {}, 0, 0, 1),  # T(x*)
    ],
)
def test_teacher_calls_per_batch(batch, name, params, epoch, inner, outer):
    x, y = batch
    s, t = bn_net(0), bn_net(1)
    t.train()
    calls: list[bool] = []
    count_calls(t, calls)
    m = build(name, {"teacher": t}, **params)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    m.start_epoch(epoch, 1.0)
    x_adv = m.perturb(s, x, y)
    assert calls == [True] * inner  # AdaAD: autograd on through T(x') at every step
    del calls[:]
    m.loss(s, x, x_adv, y)
    assert calls == [False] * outer  # fixed outputs: no_grad, once each
    assert all(p.grad is None for p in t.parameters())
    assert all(p.grad is None for p in s.parameters())


def test_iad2_teachers_run_once_each_on_x_adv(batch):
    x, y = batch
    s, t_rob, t_st = bn_net(0), bn_net(1), bn_net(2)
    seen = {"rob": [], "st": []}
    t_rob.register_forward_hook(lambda mod, inp, out: seen["rob"].append(inp[0]))
    t_st.register_forward_hook(lambda mod, inp, out: seen["st"].append(inp[0]))
    m = build("iad-ii", {"robust_teacher": t_rob, "clean_teacher": t_st})
    m.start_epoch(40, 1.0)
    x_adv = m.perturb(s, x, y)
    m.loss(s, x, x_adv, y)
    assert len(seen["rob"]) == 1 and len(seen["st"]) == 1
    assert seen["rob"][0] is x_adv and seen["st"][0] is x_adv


# ----------------------------------------------------------------------------- CLI end to end



@pytest.fixture(scope="module")
def teachers():
    # a private directory: pytest's rotation of old basetemp dirs can delete tmp_path_factory
    # folders while several pytest sessions run at once
    with tempfile.TemporaryDirectory(prefix="advkd-single-") as tmp:
        yield from _pretrain(Path(tmp) / "runs")


def _pretrain(runs: Path):
    assert main(["--runs-dir", str(runs), "pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST]) == 0
    assert main(["--runs-dir", str(runs), "pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST[:-2]]) == 0
    found = {p.parent.name: p for p in runs.glob("pretrain-teacher/synthetic/*/best.safetensors")}
    yield runs, found["tinycnn-trades-steps2-b32-ev32-n64-s0"], found["tinycnn-natural-b32-ev32-n64-s0"]


@pytest.mark.parametrize(
    "name,extra,key",
    [
        ("adaad", [], "train_loss_adv"),
        ("adaiad", ["--set", "method.begin=0"], "train_loss_introspect"),
        ("iad", ["--set", "method.begin=0"], "train_loss_introspect"),
        ("iad-ii", ["--set", "method.begin=0"], "train_loss_introspect"),
        ("akd", [], "train_adv_acc"),
    ],
)
def test_cli_distill(teachers, name, extra, key):
    runs, robust, clean = teachers
    roles = ["--clean-teacher", str(clean), "--robust-teacher", str(robust)] if name == "iad-ii" else ["--teacher", str(robust)]
    assert main(["--runs-dir", str(runs), "distill", "--method", name, "--student", "tinycnn", *roles, *FAST, *extra]) == 0
    metrics = [p for p in runs.glob("distill/synthetic/*/metrics.jsonl") if p.parent.name.startswith(f"tinycnn-{name}-tinycnn")]
    assert len(metrics) == 1
    row = json.loads(Path(metrics[0]).read_text().splitlines()[-1])
    assert key in row and row["train_loss"] == row["train_loss"]  # logged and finite
