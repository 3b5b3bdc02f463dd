"""Three-batch parity of IAD-I (``iad``), IAD-II (``iad-ii``) and AdaIAD (``adaiad``) with their reference scripts.

Each reference function below replays one training step per batch in the order of ``ZFancy/IAD``
``IAD-I.py`` / ``IAD-II.py`` or ``boyellow/AdaAD`` ``main.py`` (every student forward, BN mode,
reduction and ``.item()`` weight as there) and is compared, through ``tests/parity.py``, with advkd's
method on float64 nets: adversarial points, loss, parameters and BatchNorm buffers after every step,
over a warm-up batch and two batches after ``begin``, and over warm-up only with the default ``begin``.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from parity import assert_same, parity_batches, parity_net, run_method, sgd, snapshot, teacher_net

from advkd.attacks.engine import random_start
from advkd.methods import build, method_roles

pytestmark = pytest.mark.usefixtures("one_thread")

EPS, STEP, STEPS = 8 / 255, 2 / 255, 10  # config_train in IAD-I.py / IAD-II.py; --epsilon/--step_size as the AdaAD tables run it


def _kl_rows(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss(reduce=False)(log_softmax(s), q).sum(dim=1)``: the per-sample KL(q || softmax(s))."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), target_probs, reduction="none").sum(dim=1)


def _reliability(guide: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """The reference's per-sample loop: ``Alpha[i] = (softmax(guide)[i][y_i] ** beta).item()``, a constant.

    ``Alpha`` is ``torch.ones(B)`` in the default dtype, which is the inputs' dtype there (float32);
    here the inputs are float64, so it is float64."""
    weights = torch.ones(len(y), dtype=guide.dtype)
    probs = F.softmax(guide, dim=1)
    for i in range(len(y)):
        weights[i] = probs[i][y[i].item()].pow(beta).item()
    return weights


def _attack_pgd_train(student, x, y):
    """IAD-I.py ``AttackPGD.forward`` (lines 95-106; IAD-II.py lines 100-111): the student keeps the
    caller's mode (train). Start x + U(-eps, eps) not clamped; 10 steps of SUM-CE sign ascent, clip to
    the ball with min/max, clamp to [0, 1]; then one more forward on the final point, returned with it."""
    xa = x.detach() + torch.zeros_like(x).uniform_(-EPS, EPS)
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            objective = F.cross_entropy(student(xa), y, reduction="sum")
        grad = torch.autograd.grad(objective, [xa])[0]
        xa = xa.detach() + STEP * grad.detach().sign()
        xa = torch.minimum(torch.maximum(xa, x - EPS), x + EPS).clamp(0.0, 1.0)
    return student(xa), xa


def _adaad_inner(student, teacher, x):
    """AdaAD AT_helper.py ``adaad_inner_loss`` (lines 8-48), BN_eval=True: student and teacher in eval
    mode; start x + 0.001*N(0, I) not clamped (the reference draws float32 noise, so it is drawn here
    with advkd's ``random_start``, at the same point); 10 sign steps on SUM KL(softmax(T(x')) ||
    softmax(S(x'))) with the teacher re-run at each step and not detached; back to train mode."""
    student.eval()
    teacher.eval()
    xa = random_start(x, eps=EPS, init="gaussian", init_std=0.001, clamp=False)
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            objective = F.kl_div(F.log_softmax(student(xa), dim=1), F.softmax(teacher(xa), dim=1), reduction="none").sum()
        grad = torch.autograd.grad(objective, [xa])[0]
        xa = xa.detach() + STEP * grad.detach().sign()
        xa = torch.minimum(torch.maximum(xa, x - EPS), x + EPS).clamp(0.0, 1.0)
    student.train()
    return xa.clamp(0.0, 1.0).detach()


def _train(step, student, epochs, seed):
    """The epoch / batch loop of the scripts, seeded as ``run_method`` seeds (``seed + k`` before the
    k-th batch); ``step(epoch, x, y, optimizer)`` runs one reference training step and returns (x_adv, loss)."""
    optimizer = sgd(student)
    out, k = [], 0
    for epoch, batches in enumerate(epochs):
        student.train()
        for x, y in batches:
            torch.manual_seed(seed + k)
            k += 1
            x_adv, loss = step(epoch, x, y, optimizer)
            out.append(snapshot(student, x_adv, loss))
    return out


# ZFancy/IAD IAD-I.py, train(), lines 156-184 (step: lines 164-184; attack wrapper: lines 95-106).
def reference_iad(student, teacher, epochs, *, alpha=1.0, temperature=1.0, beta=0.1, begin=60, seed=0):
    tau = temperature

    def step(epoch, x, y, optimizer):
        optimizer.zero_grad()
        t_clean = teacher(x)  # L165: teacher (eval) on clean x
        s_adv, x_adv = _attack_pgd_train(student, x, y)  # L166: 10 train-mode attack forwards + the 11th, kept for the loss
        student(x_adv).detach()  # L169: ``basicop``, a train-mode forward on x' whose output is never used
        guide = teacher(x_adv)  # L170
        n = len(s_adv)
        distill = alpha * tau * tau * (1 / n) * torch.sum(_kl_rows(s_adv / tau, F.softmax(t_clean / tau, dim=1)))
        if epoch >= begin:  # L173-179
            w = _reliability(guide, y, beta)
            target = F.softmax(student(x), dim=1)  # train-mode clean forward, not detached
            intro = alpha * (1 / n) * torch.sum(_kl_rows(s_adv, target).mul(1 - w))
            ce = (1.0 - alpha) * F.cross_entropy(student(x), y)  # a second clean forward, run even when alpha = 1
            loss = distill + intro + ce
        else:  # L181
            loss = distill + (1.0 - alpha) * F.cross_entropy(student(x), y)
        loss.backward()
        optimizer.step()
        return x_adv, loss

    return _train(step, student, epochs, seed)


# ZFancy/IAD IAD-II.py, train(), lines 171-195 (step: lines 177-195; attack wrapper: lines 100-111).
def reference_iad2(student, robust, clean, epochs, *, alpha1=0.5, alpha2=0.25, temperature=1.0, beta=0.1, begin=40, seed=0):
    tau = temperature

    def step(epoch, x, y, optimizer):
        optimizer.zero_grad()
        s_adv, x_adv = _attack_pgd_train(student, x, y)  # L178: 11 train-mode forwards, the last kept
        t_adv = robust(x_adv)  # L179: both teachers on x'
        st_adv = clean(x_adv)  # L180
        guide = robust(x_adv)  # L183
        n = len(s_adv)
        ce = (1 - alpha1 - alpha2) * F.cross_entropy(s_adv, y)  # CE on the adversarial output
        robust_rows = _kl_rows(s_adv / tau, F.softmax(t_adv / tau, dim=1))
        clean_term = alpha2 * tau * tau * (1 / n) * torch.sum(_kl_rows(s_adv / tau, F.softmax(st_adv / tau, dim=1)))
        if epoch >= begin:  # L185-190: teacher term weighted by w, introspection inside the alpha1*tau^2 bracket
            w = _reliability(guide, y, beta)
            weighted = (1 / n) * torch.sum(robust_rows.mul(w))
            intro = (1 / n) * torch.sum(_kl_rows(s_adv, F.softmax(student(x), dim=1)).mul(1 - w))  # the one clean forward
            loss = ce + alpha1 * tau * tau * (weighted + intro) + clean_term
        else:  # L192
            loss = ce + alpha1 * tau * tau * (1 / n) * torch.sum(robust_rows) + clean_term
        loss.backward()
        optimizer.step()
        return x_adv, loss

    return _train(step, student, epochs, seed)


# boyellow/AdaAD main.py, train(), branch AdaAD_with_IAD1, lines 355-387 (inner: AT_helper.py lines 8-48).
def reference_adaiad(student, teacher, epochs, *, alpha=1.0, temperature=30.0, beta=0.1, begin=60, seed=0):
    tau = temperature

    def step(epoch, x, y, optimizer):
        optimizer.zero_grad()  # L356
        x_adv = _adaad_inner(student, teacher, x)  # L357-358: eval-mode attack, no BN update
        student.train()  # L359
        student(x)  # L360: ``ori_outputs``, train-mode clean forward used only for the logged accuracy
        s_adv = student(x_adv)  # L361
        # L364: ``basicop = net(adv_inputs).detach()`` is commented out in this script: no such forward
        guide = teacher(x_adv)  # L365
        t_adv = teacher(x_adv)  # L366: the teacher term uses T(x*)
        n = len(s_adv)
        distill = alpha * tau * tau * (1 / n) * torch.sum(_kl_rows(s_adv / tau, F.softmax(t_adv / tau, dim=1)))
        if epoch >= begin:  # L371-378
            w = _reliability(guide, y, beta)
            intro = alpha * (1 / n) * torch.sum(_kl_rows(s_adv, F.softmax(student(x), dim=1)).mul(1 - w))  # not detached
            ce = (1.0 - alpha) * F.cross_entropy(student(x), y)  # clean forward for CE, run even when alpha = 1
            loss = distill + intro + ce
        else:  # L380-381
            loss = distill + (1.0 - alpha) * F.cross_entropy(student(x), y)
        loss.backward()  # L386
        optimizer.step()  # L387
        return x_adv, loss

    return _train(step, student, epochs, seed)


def _epochs(begin: int | None):
    """Three batches: one warm-up epoch then two batches after ``begin=1``; or (default begin) one epoch of three."""
    b = parity_batches(seed=0, n=8, count=3)
    return [[b[0]], [b[1], b[2]]] if begin == 1 else [b]


def _advkd(name, teachers, overrides, epochs):
    assert set(teachers) == set(method_roles(name))
    method = build(name, teachers, num_classes=5, dataset="cifar10", **overrides)
    return run_method(method, copy.deepcopy(parity_net(0)), epochs)


CASES = [
    pytest.param({}, id="default-begin"),
    pytest.param({"begin": 1}, id="begin1"),
]


@pytest.mark.parametrize("overrides", [*CASES, pytest.param({"begin": 1, "alpha": 0.7}, id="begin1-alpha0.7")])
def test_iad_matches_reference(overrides):
    epochs = _epochs(overrides.get("begin"))
    ours = _advkd("iad", {"teacher": teacher_net(1)}, overrides, epochs)
    ref = reference_iad(copy.deepcopy(parity_net(0)), teacher_net(1), epochs, **overrides)
    assert_same(ours, ref)


@pytest.mark.parametrize("overrides", CASES)
def test_iad2_matches_reference(overrides):
    epochs = _epochs(overrides.get("begin"))
    ours = _advkd("iad-ii", {"robust_teacher": teacher_net(1), "clean_teacher": teacher_net(2)}, overrides, epochs)
    ref = reference_iad2(copy.deepcopy(parity_net(0)), teacher_net(1), teacher_net(2), epochs, **overrides)
    assert_same(ours, ref)


@pytest.mark.parametrize("overrides", CASES)
def test_adaiad_matches_reference(overrides):
    epochs = _epochs(overrides.get("begin"))
    ours = _advkd("adaiad", {"teacher": teacher_net(1)}, overrides, epochs)
    ref = reference_adaiad(copy.deepcopy(parity_net(0)), teacher_net(1), epochs, **overrides)
    assert_same(ours, ref)
