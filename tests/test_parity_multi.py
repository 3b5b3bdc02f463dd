"""Three-batch parity of the multi-teacher and class-reweighting methods (mtard, bmtard, fair-ard, fair-rslad, absld).

Each reference function below replays its reference training script's order of operations (inner maximisation and BN
mode, student forwards, loss, backward, SGD step, the per-batch and per-epoch state updates) on the float64 nets of
``tests/parity.py`` over two epochs, and advkd must match it after every step, method state included.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from parity import TOL, C, assert_same, parity_batches, parity_net, run_method, sgd, snapshot, teacher_net
from torch import nn

from advkd.methods import build, method_roles

EPS, STEP, STEPS = 8 / 255, 2 / 255, 10


pytestmark = pytest.mark.usefixtures("one_thread")


def _pgd(x, x_start, attack_loss):
    """The inner loop all five references share: grad of ``attack_loss`` w.r.t. x', x' + 2/255 sign(grad),
    elementwise min/max into [x - eps, x + eps], clamp to [0, 1], 10 times ([ECCV] mtard/mtard_loss.py:42-49,
    [FAIR] Fair-ARD.py:64-77 and Fair-RSLAD.py:56-71, [ABSLD] absld_loss.py:42-51)."""
    xa = x_start
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            loss = attack_loss(xa)
        grad = torch.autograd.grad(loss, [xa])[0]
        xa = xa.detach() + STEP * torch.sign(grad.detach())
        xa = torch.min(torch.max(xa, x - EPS), x + EPS)
        xa = torch.clamp(xa, 0.0, 1.0)
    return xa


def _zhao_kl(log_p, q):
    """The element-wise ``kl_loss(a, b) = -a*b + log(b + 1e-5)*b`` of the Zhao et al. scripts (mean taken by the caller)."""
    return -log_p * q + torch.log(q + 1e-5) * q


def _teachers(name):
    """advkd's teacher dict and the reference's copies (clean teacher = teacher_net(1), robust / single = teacher_net(2))."""
    seeds = {"clean_teacher": 1, "robust_teacher": 2, "teacher": 2}
    roles = method_roles(name)
    return {r: teacher_net(seeds[r]) for r in roles}, {r: teacher_net(seeds[r]) for r in roles}


def _diverse_student(epochs):
    """parity_net(35) with its BN running statistics set (cumulative average) from the inputs of ``epochs``, buffers'
    batch count reset. parity_net(0) predicts class 3 on every input in eval mode (class 1 in train mode), so every
    other class would have kappa = 0: the Fair-RSLAD reference's weights would be NaN and Fair-ARD's divisor rule would
    show nowhere. This student predicts all five classes on the first batch (in both modes)."""
    net = parity_net(35)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    with torch.no_grad():
        net.train()(torch.cat([x for batches in epochs for x, _ in batches]))
    for m in bns:
        m.momentum = 0.1
        m.num_batches_tracked.zero_()
    return net


def _compare(name, reference, epochs, *, student=None, nesterov=False, state_keys=(), **overrides):
    ours_t, ref_t = _teachers(name)
    method = build(name, ours_t, num_classes=C, dataset="cifar10", **overrides)
    student = parity_net(0) if student is None else student
    ours = run_method(method, copy.deepcopy(student), epochs, nesterov=nesterov)
    ref = reference(copy.deepcopy(student), ref_t, epochs)
    assert_same(ours, ref, state_keys=state_keys)
    return ours, ref


# Three batches over two epochs: epoch 0 = (b0, b1), epoch 1 = (b2).
def _epochs(batches):
    return [[batches[0], batches[1]], [batches[2]]]


RANDOM = _epochs(parity_batches())
# Class 4 absent from epoch 0 (n_c far from N / C = 16 / 5), present in epoch 1.
ABSENT = _epochs(parity_batches(labels=[[0, 0, 0, 1, 1, 2, 3, 0], [0, 1, 2, 3, 0, 0, 1, 2], [4, 4, 0, 1, 2, 3, 4, 0]]))
# Fair-* cases for _diverse_student: the first batches' labels follow its predictions in places, so that every class
# present has kappa > 0 (1/kappa is finite in Fair-RSLAD's reference). FAIR_BALANCED: n = 10, every class 4 times in
# epoch 0 and twice in epoch 1, so n_c = N / C exactly (the divisor rules agree there).
FAIR_BALANCED = _epochs(parity_batches(n=10, labels=[[2, 0, 3, 4, 0, 1, 0, 1, 3, 2], [3, 1, 4, 0, 3, 2, 1, 2, 4, 4], [1, 3, 0, 2, 4, 0, 1, 2, 3, 4]]))
FAIR_UNBALANCED = _epochs(parity_batches(labels=[[2, 0, 3, 4, 0, 1, 0, 0], [0, 2, 0, 0, 4, 0, 3, 0], [4, 4, 0, 1, 2, 3, 4, 0]]))
FAIR_ABSENT = _epochs(parity_batches(labels=[[2, 0, 3, 0, 0, 1, 0, 0], [0, 2, 3, 1, 0, 0, 3, 2], [4, 4, 0, 1, 2, 3, 4, 0]]))


# ============================================================================ MTARD (ECCV)


# [ECCV] zhaoshiji123/MTARD mtard/mtard_resnet18_cifar10.py:44-49 (state), 67-103 (one step), 135-138 (decays at
# 215/260/285, not reached); inner maximisation mtard/mtard_loss.py:27-58.
def ref_mtard(student, teachers, epochs, seed=0):
    opt = sgd(student)
    weight = {"adv_loss": 0.5, "nat_loss": 0.5}
    init_adv = init_nat = None
    eta_w, bert = 0.025, 1
    steps, k = [], 0
    for batches in epochs:
        for x, y in batches:
            torch.manual_seed(seed + k)
            k += 1
            student.train()
            opt.zero_grad()
            with torch.no_grad():
                t_nat = teachers["clean_teacher"](x)
            student.eval()
            # reference: x + 0.001 * torch.randn(shape).cuda() (float32); drawn as advkd's engine draws it
            x_adv = _pgd(x, x.detach() + 0.001 * torch.randn_like(x), lambda xa: F.cross_entropy(student(xa), y))
            student.train()
            x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
            s_adv = student(x_adv)
            with torch.no_grad():
                t_adv = teachers["robust_teacher"](x_adv)
            student.train()
            s_nat = student(x)
            l_adv = torch.mean(_zhao_kl(F.log_softmax(s_adv, dim=1), F.softmax(t_adv.detach(), dim=1)))
            l_nat = torch.mean(_zhao_kl(F.log_softmax(s_nat, dim=1), F.softmax(t_nat.detach(), dim=1)))
            if init_nat is None:
                init_nat = l_nat.item()
            if init_adv is None:
                init_adv = l_adv.item()
            r_adv = (l_adv.item() / init_adv) ** bert
            r_nat = (l_nat.item() / init_nat) ** bert
            weight["nat_loss"] = weight["nat_loss"] - eta_w * (weight["nat_loss"] - r_nat / (r_adv + r_nat))
            weight["adv_loss"] = 1 - weight["nat_loss"]
            loss = weight["adv_loss"] * l_adv + weight["nat_loss"] * l_nat
            loss.backward()
            opt.step()
            state = {"w_adv": weight["adv_loss"], "w_nat": weight["nat_loss"], "loss_adv_0": init_adv, "loss_nat_0": init_nat}
            steps.append(snapshot(student, x_adv, loss, state))
    return steps


def test_mtard_parity():
    _compare("mtard", ref_mtard, RANDOM, state_keys=("w_adv", "w_nat", "loss_adv_0", "loss_nat_0"))


# ============================================================================ B-MTARD


# [EXT] zhaoshiji123/MTARD-extension resnet18_mtard_cifar10.py:47-52, 83-94 (state), 104-172 (one step: inner,
# S(x') then S(x), KLm, EBB on the current temperatures, clamp, NLB with L(0) of the first batch, loss with the
# updated weights, backward, step), 234-238 (decays, not reached). The inner helper it imports is not in [EXT];
# its ECCV version [ECCV] mtard/mtard_loss.py:27-58 is followed (CE-PGD, student eval, then S(x') train, T_adv(x')).
def ref_bmtard(student, teachers, epochs, seed=0):
    opt = sgd(student)
    weight = {"adv_loss": 1 / 2.0, "nat_loss": 1 / 2.0}
    init_adv = init_nat = None
    eta_w, eta_tau = 0.025, 0.001
    temp_adv, temp_nat, temp_min, temp_max = 1, 1, 1, 10
    steps, k = [], 0
    for batches in epochs:
        for x, y in batches:
            torch.manual_seed(seed + k)
            k += 1
            student.train()
            opt.zero_grad()
            student.eval()
            x_adv = _pgd(x, x.detach() + 0.001 * torch.randn_like(x), lambda xa: F.cross_entropy(student(xa), y))
            student.train()
            x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
            s_adv = student(x_adv)
            with torch.no_grad():
                t_adv = teachers["robust_teacher"](x_adv)
            student.train()
            s_nat = student(x)
            with torch.no_grad():
                t_nat = teachers["clean_teacher"](x)
            l_adv = torch.mean(_zhao_kl(F.log_softmax(s_adv, dim=1), F.softmax(t_adv.detach() / temp_adv, dim=1)))
            l_nat = torch.mean(_zhao_kl(F.log_softmax(s_nat, dim=1), F.softmax(t_nat.detach() / temp_nat, dim=1)))
            q_adv, q_nat = F.softmax(t_adv.detach() / temp_adv, dim=1), F.softmax(t_nat.detach() / temp_nat, dim=1)
            e_adv = torch.mean(torch.log(q_adv + 1e-5) * q_adv)
            e_nat = torch.mean(torch.log(q_nat + 1e-5) * q_nat)
            temp_adv = temp_adv - eta_tau * torch.sign(e_adv / e_nat - 1).item()
            temp_nat = temp_nat - eta_tau * torch.sign(e_nat / e_adv - 1).item()
            temp_adv = max(min(temp_max, temp_adv), temp_min)
            temp_nat = max(min(temp_max, temp_nat), temp_min)
            if init_nat is None:
                init_nat = l_nat.item()
            if init_adv is None:
                init_adv = l_adv.item()
            lhat_adv, lhat_nat = l_adv.item() / init_adv, l_nat.item() / init_nat
            lhat_avg = (lhat_adv + lhat_nat) / 2
            inv_adv, inv_nat = lhat_adv / lhat_avg, lhat_nat / lhat_avg
            weight["nat_loss"] = weight["nat_loss"] - eta_w * (weight["nat_loss"] - inv_nat / (inv_adv + inv_nat))
            weight["adv_loss"] = weight["adv_loss"] - eta_w * (weight["adv_loss"] - inv_adv / (inv_adv + inv_nat))
            weight["adv_loss"] = max(weight["adv_loss"], 0)
            weight["nat_loss"] = max(weight["nat_loss"], 0)
            coef = 1.0 / (weight["adv_loss"] + weight["nat_loss"])
            weight["adv_loss"] *= coef
            weight["nat_loss"] *= coef
            loss = weight["adv_loss"] * l_adv + weight["nat_loss"] * l_nat
            loss.backward()
            opt.step()
            state = {
                "tau_adv": temp_adv, "tau_nat": temp_nat, "w_adv": weight["adv_loss"], "w_nat": weight["nat_loss"],
                "loss_adv_0": init_adv, "loss_nat_0": init_nat,
            }
            steps.append(snapshot(student, x_adv, loss, state))
    return steps


def test_bmtard_parity():
    ours, ref = _compare("bmtard", ref_bmtard, RANDOM, state_keys=("tau_adv", "tau_nat", "w_adv", "w_nat", "loss_adv_0", "loss_nat_0"))
    assert ref[-1].state["tau_adv"] != 1 or ref[-1].state["tau_nat"] != 1, "EBB never moved a temperature: the test checks nothing there"


# ============================================================================ Fair-ARD


def _epoch_size(batches):
    return sum(len(y) for _, y in batches)


# [FAIR] NISP-official/Fair-ARD Fair-ARD.py:60-78 (attack: student in train mode as net.train() left it, x + U(-eps, eps),
# kappa at the 10 iterates, CE sum, then the final S(x') forward in train mode), 127-150 (one step: kappa per class,
# T(x), S(x), per-sample KLDivLoss() mean over C and CE times reweight[y], loss alpha*T^2*KL + (1-alpha)*CE),
# 158-167 and 116-125 (after the epoch: kappa_total / (N/C), (1/(kappa+1e-5))^beta, *C/sum, clamp [5/6, 5/2]),
# 160 (SGD Nesterov). The lr schedule (line 30-34) does not act in epochs 0-1.
def ref_fair_ard(student, teachers, epochs, seed=0, temp=30.0, alpha=1.0, beta=2.0):
    teacher = teachers["teacher"]
    opt = sgd(student, nesterov=True)
    reweight = torch.ones(C, dtype=torch.float64)
    steps, k = [], 0
    for batches in epochs:
        student.train()
        kappa_total = [0 for _ in range(C)]
        for bi, (x, y) in enumerate(batches):
            torch.manual_seed(seed + k)
            k += 1
            opt.zero_grad()
            kappa = [0 for _ in range(len(x))]

            def attack_loss(xa):
                out = student(xa)
                predict = out.max(1, keepdim=True)[1]
                for p in range(len(xa)):
                    if predict[p] == y[p]:
                        kappa[p] += 1
                return F.cross_entropy(out, y, reduction="sum")

            x_adv = _pgd(x, x.detach() + torch.zeros_like(x).uniform_(-EPS, EPS), attack_loss)
            outputs = student(x_adv)
            for i in range(len(kappa)):
                kappa_total[y[i]] += kappa[i]
            teacher_outputs = teacher(x)
            basic_outputs = student(x)
            kl_class, ce_class = [], []
            for i in range(len(outputs)):
                # nn.KLDivLoss() default reduction on one C-vector = elementwise mean (written out to avoid its warning)
                kl_i = F.kl_div(F.log_softmax(outputs[i] / temp, dim=0), F.softmax(teacher_outputs[i] / temp, dim=0), reduction="none").mean()
                ce_i = F.cross_entropy(basic_outputs[i].unsqueeze(0), y[i].unsqueeze(0))
                kl_class.append(kl_i * reweight[y[i]])
                ce_class.append(ce_i * reweight[y[i]])
            kl_loss = (1 / len(outputs)) * torch.sum(torch.stack(kl_class))
            ce_loss = (1 / len(outputs)) * torch.sum(torch.stack(ce_class))
            loss = alpha * temp * temp * kl_loss + (1.0 - alpha) * ce_loss
            loss.backward()
            opt.step()
            if bi == len(batches) - 1:
                kappa_bar = torch.tensor(kappa_total, dtype=torch.float64) / (_epoch_size(batches) / C)
                raw = (1 / (kappa_bar + 1e-5)) ** beta
                reweight = torch.clamp(raw * (C / torch.sum(raw)), min=5 / 6, max=5 / 2)
                kappa_total = [0 for _ in range(C)]  # the next epoch's train() starts from zero (line 129)
            steps.append(snapshot(student, x_adv, loss, {"weights": reweight.tolist(), "kappa_sum": [float(v) for v in kappa_total]}))
    return steps


@pytest.mark.parametrize("epochs", [FAIR_BALANCED, FAIR_UNBALANCED, FAIR_ABSENT], ids=["balanced", "unbalanced", "class-absent-in-epoch-0"])
def test_fair_ard_parity(epochs):
    _, ref = _compare("fair-ard", ref_fair_ard, epochs, student=_diverse_student(epochs), nesterov=True, state_keys=("weights", "kappa_sum"))
    assert ref[1].state["weights"] != [1.0] * C, "the end-of-epoch weights did not move"


# ============================================================================ Fair-RSLAD


# [FAIR] NISP-official/Fair-ARD Fair-RSLAD.py:40-79 (inner: student eval, x + 0.001*N(0,I), kappa at the 10 iterates,
# KL sum against softmax(T(x)), then train mode and the S(x') forward), 110-140 (one step: T(x) under no_grad first,
# kappa per class, S(x), per-sample kl_loss rows times reweight[y], sum / B, mean over C, 5/6 and 1/6),
# 141-142 and 95-104 (after the epoch: kappa_total / (N/C), (1/kappa)^beta, *C/sum, clamp [5/6, 5/2]), 85 (Nesterov).
def ref_fair_rslad(student, teachers, epochs, seed=0, beta=2.0):
    teacher = teachers["teacher"]
    opt = sgd(student, nesterov=True)
    reweight = torch.ones(C, dtype=torch.float64)
    steps, k = [], 0
    for batches in epochs:
        kappa_total = [0 for _ in range(C)]
        for bi, (x, y) in enumerate(batches):
            torch.manual_seed(seed + k)
            k += 1
            student.train()
            opt.zero_grad()
            with torch.no_grad():
                teacher_logits = teacher(x)
            student.eval()
            x_start = x.detach() + 0.001 * torch.randn_like(x)  # reference: float32 torch.randn(shape).cuda()
            kappa = [0 for _ in range(len(x))]

            def attack_loss(xa):
                out = student(xa)
                predict = out.max(1, keepdim=True)[1]
                for p in range(len(xa)):
                    if predict[p] == y[p]:
                        kappa[p] += 1
                return torch.sum(F.kl_div(F.log_softmax(out, dim=1), F.softmax(teacher_logits, dim=1), reduction="none"))

            x_adv = _pgd(x, x_start, attack_loss)
            student.train()
            x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
            adv_logits = student(x_adv)
            for i in range(len(kappa)):
                kappa_total[y[i]] += kappa[i]
            student.train()
            nat_logits = student(x)
            rows_adv, rows_nat = [], []
            for i in range(len(y)):
                # F.log_softmax(logits[i]) with no dim: the implicit dim of a 1-D tensor is 0
                rows_adv.append(_zhao_kl(F.log_softmax(adv_logits[i], dim=0), F.softmax(teacher_logits.detach()[i], dim=0)) * reweight[y[i]])
                rows_nat.append(_zhao_kl(F.log_softmax(nat_logits[i], dim=0), F.softmax(teacher_logits.detach()[i], dim=0)) * reweight[y[i]])
            kl_1 = torch.mean((1.0 / len(y)) * sum(rows_adv))
            kl_2 = torch.mean((1.0 / len(y)) * sum(rows_nat))
            loss = 5 / 6.0 * kl_1 + 1 / 6.0 * kl_2
            loss.backward()
            opt.step()
            if bi == len(batches) - 1:
                kappa_bar = torch.tensor(kappa_total, dtype=torch.float64) / (_epoch_size(batches) / C)
                raw = (1 / kappa_bar) ** beta
                reweight = torch.clamp(raw * (C / torch.sum(raw)), min=5 / 6, max=5 / 2)
                kappa_total = [0 for _ in range(C)]  # the next epoch starts from zero (line 112)
            steps.append(snapshot(student, x_adv, loss, {"weights": reweight.tolist(), "kappa_sum": [float(v) for v in kappa_total]}))
    return steps


@pytest.mark.parametrize("epochs", [FAIR_BALANCED, FAIR_UNBALANCED], ids=["balanced", "unbalanced"])
def test_fair_rslad_parity(epochs):
    """Weights compared where the reference's are finite: epoch 0's labels give every class kappa > 0, but the student
    does not predict every class on b2, so after epoch 1 the reference's weight of a class with kappa 0 is NaN (advkd's
    finite limit there: test below); its other weights are (finite) * 0 -> clamped to 5/6, as advkd's."""
    ours, ref = _compare("fair-rslad", ref_fair_rslad, epochs, student=_diverse_student(epochs), nesterov=True, state_keys=("kappa_sum",))
    assert not torch.tensor(ref[1].state["weights"]).isnan().any(), "epoch 0 must give every class kappa > 0"
    assert ref[1].state["weights"] != [1.0] * C, "the end-of-epoch weights did not move"
    for k, (a, b) in enumerate(zip(ours, ref)):
        want = torch.tensor(b.state["weights"], dtype=torch.float64)
        finite = ~want.isnan()
        got = torch.tensor(a.state["weights"], dtype=torch.float64)
        torch.testing.assert_close(got[finite], want[finite], atol=TOL, rtol=0, msg=lambda m: f"step {k + 1} weights: {m}")


def test_fair_rslad_zero_kappa_class_gets_the_finite_limit():
    """advkd's rule where the reference's weight is NaN (1/0, then inf*0): classes with kappa_bar = 0 (here the class
    absent from the epoch) share the normalised mass C equally, the others get 0, then the clamp (fair.py class_weights)."""
    ours_t, _ = _teachers("fair-rslad")
    method = build("fair-rslad", ours_t, num_classes=C, dataset="cifar10")
    student = _diverse_student(FAIR_ABSENT)
    method.start_epoch(0, 1.0)
    student.train()
    for x, y in FAIR_ABSENT[0]:
        method.perturb(student, x, y)
    kappa_sum = torch.tensor(method.state_dict()["kappa_sum"])
    method.end_epoch(0, 1.0)
    zero = kappa_sum == 0
    assert zero[4] and zero.sum() < C
    expected = (zero.double() * C / zero.sum()).clamp(5 / 6, 5 / 2)
    torch.testing.assert_close(torch.tensor(method.state_dict()["weights"], dtype=torch.float64), expected, atol=1e-12, rtol=0)


# ============================================================================ ABSLD


# [ABSLD] zhaoshiji123/ABSLD resnet18_absld_cifar10.py:66-71 (temperatures, rate, range), 83-127 (one step: T(x) once,
# the two tempered copies as .detach() views of one tensor divided in place row by row -- so both end up z/tau_adv/tau_nat --,
# inner on the adversarial copy, S(x), per-class CE sums of the detached logits, kl_loss with torch.log(softmax), 5/6 and
# 1/6), 173-189 (after the epoch: rate decay check, gap = sums - mean over all classes, tau -= rate*gap/max|gap|, clamp);
# inner maximisation absld_loss.py:26-59.
def ref_absld(student, teachers, epochs, seed=0):
    teacher = teachers["teacher"]
    opt = sgd(student)
    temp_adv = torch.ones(C, dtype=torch.float64)
    temp_nat = torch.ones(C, dtype=torch.float64)
    rate, temp_min, temp_max = 0.1, 0.5, 5
    steps, k = [], 0
    for batches in epochs:
        total_adv = torch.zeros(C, dtype=torch.float64)
        total_nat = torch.zeros(C, dtype=torch.float64)
        for bi, (x, y) in enumerate(batches):
            torch.manual_seed(seed + k)
            k += 1
            student.train()
            opt.zero_grad()
            with torch.no_grad():
                logits = teacher(x).detach()
                new_adv = logits.detach()  # a view: shares storage with new_nat
                new_nat = logits.detach()
                for i in range(y.shape[0]):
                    new_adv[i] = new_adv[i] / temp_adv[y[i]]
                    new_nat[i] = new_nat[i] / temp_nat[y[i]]
            student.eval()
            x_start = x.detach() + 0.001 * torch.randn_like(x)  # reference: float32 torch.randn(shape).cuda()
            x_adv = _pgd(x, x_start, lambda xa: torch.sum(F.kl_div(F.log_softmax(student(xa), dim=1), F.softmax(new_adv, dim=1), reduction="none")))
            student.train()
            x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
            adv_logits = student(x_adv)
            student.train()
            nat_logits = student(x)
            with torch.no_grad():
                ce_adv = F.cross_entropy(adv_logits.detach(), y, reduction="none")
                ce_nat = F.cross_entropy(nat_logits.detach(), y, reduction="none")
                for i in range(y.shape[0]):
                    total_adv[y[i]] = total_adv[y[i]] + ce_adv[i]
                    total_nat[y[i]] = total_nat[y[i]] + ce_nat[i]
            kl_1 = torch.mean(_zhao_kl(torch.log(F.softmax(adv_logits, dim=1)), F.softmax(new_adv.detach(), dim=1)))
            kl_2 = torch.mean(_zhao_kl(torch.log(F.softmax(nat_logits, dim=1)), F.softmax(new_nat.detach(), dim=1)))
            loss = 5.0 / 6.0 * kl_1 + 1.0 / 6.0 * kl_2
            loss.backward()
            opt.step()
            if bi == len(batches) - 1:  # the rate decays at 215/260/285 only
                gap = total_adv - torch.mean(total_adv)
                temp_adv = torch.clamp(temp_adv - rate * gap / torch.max(torch.abs(gap)), temp_min, temp_max)
                gap = total_nat - torch.mean(total_nat)
                temp_nat = torch.clamp(temp_nat - rate * gap / torch.max(torch.abs(gap)), temp_min, temp_max)
                total_adv, total_nat = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)  # next epoch (line 85-86)
            state = {"tau_adv": temp_adv.tolist(), "tau_nat": temp_nat.tolist(), "risk_adv": total_adv.tolist(), "risk_nat": total_nat.tolist()}
            steps.append(snapshot(student, x_adv, loss, state))
    return steps


@pytest.mark.parametrize("epochs", [RANDOM, ABSENT], ids=["random-labels", "class-absent-in-epoch-0"])
def test_absld_parity(epochs):
    _, ref = _compare("absld", ref_absld, epochs, state_keys=("tau_adv", "tau_nat", "risk_adv", "risk_nat"))
    assert ref[1].state["tau_adv"] != [1.0] * C, "the end-of-epoch temperatures did not move"
