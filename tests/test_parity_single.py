"""Three-batch parity of the single-teacher and teacher-free methods with their reference training scripts.

For PGD-AT, TRADES, SCORE, ARD, RSLAD, AKD and AdaAD, a reference function written here in the order
of operations of the method's reference script (inner maximisation, forwards in the script's order and
BN mode, loss, backward, SGD step) runs beside advkd's method through ``tests/parity.py`` on the same
float64 nets, batches and seeds; adversarial points, loss, student parameters and BatchNorm buffers
must agree after each of three steps (two in one epoch, one in the next).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from parity import C, Step, assert_same, parity_batches, parity_net, run_method, sgd, snapshot, teacher_net
from torch import Tensor, nn

from advkd.methods import build, method_roles

EPS, STEP, STEPS = 8 / 255, 2 / 255, 10  # the methods' default inner settings (AdaAD paper section 4)

# (student, optimizer, x, y, teacher) -> (x_adv, loss) after the reference's backward and optimizer step
RefStep = Callable[[nn.Module, torch.optim.Optimizer, Tensor, Tensor, nn.Module | None], tuple[Tensor, Tensor]]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_reference(ref: RefStep, student: nn.Module, epochs: list[list[tuple[Tensor, Tensor]]], teacher: nn.Module | None, *, seed: int = 0) -> list[Step]:
    """The reference scripts' loop: ``model.train()`` at each epoch's start, then one reference step per
    batch, seeded as ``run_method`` seeds advkd (``torch.manual_seed(seed + k)`` before the k-th batch)."""
    optimizer = sgd(student)
    steps: list[Step] = []
    k = 0
    for batches in epochs:
        student.train()
        for x, y in batches:
            torch.manual_seed(seed + k)
            k += 1
            x_adv, loss = ref(student, optimizer, x, y, teacher)
            steps.append(snapshot(student, x_adv, loss))
    return steps


def linf_clip(x_adv: Tensor, x: Tensor) -> Tensor:
    """The projection every reference writes out: ``min(max(x', x - eps), x + eps)``, then clamp to [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - EPS), x + EPS), 0.0, 1.0)


def gaussian_noise(x: Tensor) -> Tensor:
    """``0.001 * N(0, I)``. The scripts draw ``torch.randn(shape).cuda()`` (float32, CUDA stream); here the
    engine's ``init_std * torch.randn_like(x)``, so the float64 stream matches at the same point."""
    return 0.001 * torch.randn_like(x)


# ---------------------------------------------------------------------------------------------- PGD-AT
# boyellow/AdaAD AT_helper.py L51-85 (Madry_PGD)
def madry_pgd(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The AdaAD repo's PGD-AT attack (also the AKD attack): eval BN, clamped 0.001*N start, CE mean."""
    model.eval()
    x_adv = x.detach() + gaussian_noise(x)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_i = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_i, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = linf_clip(x_adv, x)
    model.train()
    return x_adv


# boyellow/AdaAD main.py L307-324 (branch Plain_Madry), L386-387; attack AT_helper.py L51-85
def ref_pgd_at(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None, *, logging_forward: bool = True) -> tuple[Tensor, Tensor]:
    """``logging_forward=False``: the same step without the clean accuracy forward (advkd's bn_side_forward=false)."""
    adv_inputs = madry_pgd(model, x, y)
    model.train()
    opt.zero_grad()
    adv_outputs = model(adv_inputs)
    adv_loss = F.cross_entropy(adv_outputs, y)
    if logging_forward:
        ori_outputs = model(x)  # only logged (and its CE unused without --mixture), but BN statistics move
        F.cross_entropy(ori_outputs, y)
    loss = adv_loss
    loss.backward()
    opt.step()
    return adv_inputs, loss


# ---------------------------------------------------------------------------------------------- TRADES
# yaodongyu/TRADES trades.py L17-84 (trades_loss, l_inf branch), train_trades_cifar10.py L73-90
def ref_trades(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None, *, beta: float = 6.0, second_clean: bool = True) -> tuple[Tensor, Tensor]:
    """``second_clean=False``: the KL target reuses the first S(x) (advkd's bn_side_forward=false)."""
    opt.zero_grad()
    model.eval()
    batch_size = len(x)
    x_adv = x.detach() + gaussian_noise(x)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():  # the clean target is recomputed at every step, in eval mode
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1), reduction="sum")
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = linf_clip(x_adv, x)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    adv_log = F.log_softmax(model(x_adv), dim=1)  # argument order: S(x*) before the second S(x)
    target = F.softmax(model(x) if second_clean else logits, dim=1)  # not detached
    loss_robust = (1.0 / batch_size) * F.kl_div(adv_log, target, reduction="sum")
    loss = loss_natural + beta * loss_robust
    loss.backward()
    opt.step()
    return x_adv, loss


# ---------------------------------------------------------------------------------------------- SCORE
def lse_distance(output: Tensor, target: Tensor) -> Tensor:
    """SCORE's ``distance_func(..., 'LSE')``: per-row squared error of probability vectors."""
    return torch.sum((output - target) ** 2, dim=-1)


def score_clip_bound(clip_loss: float, num_classes: int, dtype: torch.dtype = torch.float64) -> float:
    """P2333/SCORE without_DDPM/train_cifar.py L235-239, in the working precision (the script's float32
    default dtype is its training precision, as float64 is here)."""
    bound = torch.ones(num_classes, dtype=dtype) * clip_loss / (num_classes - 1)
    bound[0] = 1 - clip_loss
    bound_target = torch.zeros(num_classes, dtype=dtype)
    bound_target[0] = 1
    return lse_distance(bound, bound_target).item()


# P2333/SCORE without_DDPM/train_cifar.py L297-338 (training step, --attack TRADES --divergence LSE),
# attack_trades_divergence L40-56, clamp utils.py L28-31; normalize (utils.py L25) is part of the model here
def ref_score(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None, *, lam: float = 6.0, clip_loss: float = 0.3) -> tuple[Tensor, Tensor]:
    clip_bound = score_clip_bound(clip_loss, C)
    opt.zero_grad()
    # attack_trades_divergence: the perturbation delta is the variable, kept so that x + delta lies in [0, 1]
    model.eval()
    clean_output = F.softmax(model(x).detach(), dim=1)
    delta = gaussian_noise(x)
    delta = torch.max(torch.min(delta, 1 - x), 0 - x)
    delta.requires_grad = True
    for _ in range(STEPS):
        output = F.softmax(model(x + delta), dim=1)
        loss = lse_distance(output, clean_output)
        grad = torch.autograd.grad(loss.mean(), delta)[0]
        d = torch.clamp(delta + STEP * torch.sign(grad), min=-EPS, max=EPS)
        delta = torch.max(torch.min(d, 1 - x), 0 - x).detach().requires_grad_(True)  # delta.data = clamp(...)
    model.train()
    delta = delta.detach()
    adv_input = torch.clamp(x + delta, min=0, max=1)
    robust_output = F.softmax(model(adv_input), dim=1)
    y_soft = (1 - C * 0.0) * F.one_hot(y, num_classes=C) + 0.0  # --label_smoothing 0
    output = F.softmax(model(x), dim=1)
    kl_term = lse_distance(robust_output, output)
    robust_loss = lse_distance(output, y_soft.to(output.dtype))
    robust_loss = robust_loss + lam * kl_term
    robust_loss = F.relu(robust_loss - clip_bound)  # clip the clean term too (no --not_clip_clean)
    opt.zero_grad()
    loss = robust_loss.mean()
    loss.backward()
    opt.step()
    return adv_input, loss


# ---------------------------------------------------------------------------------------------- ARD
# goldblum/AdversariallyRobustDistillation main.py L117-129 (train), AttackPGD.forward L68-79;
# with temp=1, elemmean=False: ZFancy/IAD ARD.py L153-166 (same order, BATCHMEAN, tau 1)
def ref_ard(
    model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None,
    *, temp: float = 30.0, alpha: float = 1.0, elemmean: bool = True,
) -> tuple[Tensor, Tensor]:
    assert teacher is not None
    opt.zero_grad()
    # AttackPGD.forward: the wrapper is in train mode (net.train()), so is the student
    inputs = x
    xa = inputs.detach()
    xa = xa + torch.zeros_like(xa).uniform_(-EPS, EPS)  # not clamped before the first forward
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            loss_i = F.cross_entropy(model(xa), y, reduction="sum")  # size_average=False
        grad = torch.autograd.grad(loss_i, [xa])[0]
        xa = xa.detach() + STEP * torch.sign(grad.detach())
        xa = linf_clip(xa, inputs)
    outputs = model(xa)  # the wrapper's last train-mode forward is S(x*) of the loss
    teacher_outputs = teacher(inputs)
    basic_outputs = model(inputs)
    kl = F.kl_div(F.log_softmax(outputs / temp, dim=1), F.softmax(teacher_outputs / temp, dim=1), reduction="none")
    distill = kl.mean() if elemmean else (1 / len(outputs)) * torch.sum(kl.sum(dim=1))  # nn.KLDivLoss() | IAD's explicit 1/B
    loss = alpha * temp * temp * distill + (1.0 - alpha) * F.cross_entropy(basic_outputs, y)
    loss.backward()
    opt.step()
    return xa.detach(), loss


# ---------------------------------------------------------------------------------------------- RSLAD
# zibojia/RSLAD resnet18_rslad_cifar10.py L48-65 (training step), rslad_loss.py L26-59 (rslad_inner_loss),
# kl_loss L38-40; w_adv=1, w_nat=0 is the AdaAD paper's alpha = 1 with the same forwards
def ref_rslad(
    model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None,
    *, w_adv: float = 5 / 6.0, w_nat: float = 1 / 6.0,
) -> tuple[Tensor, Tensor]:
    assert teacher is not None
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        teacher_logits = teacher(x)
    # rslad_inner_loss
    model.eval()
    x_adv = x.detach() + gaussian_noise(x)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = torch.sum(F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(teacher_logits, dim=1), reduction="none"))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = linf_clip(x_adv, x)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    adv_logits = model(x_adv)
    # back in the script
    model.train()
    nat_logits = model(x)

    def kl_loss(a: Tensor, b: Tensor) -> Tensor:
        return -a * b + torch.log(b + 1e-5) * b

    kl_loss1 = torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), F.softmax(teacher_logits.detach(), dim=1)))
    kl_loss2 = torch.mean(kl_loss(F.log_softmax(nat_logits, dim=1), F.softmax(teacher_logits.detach(), dim=1)))
    loss = w_adv * kl_loss1 + w_nat * kl_loss2
    loss.backward()
    opt.step()
    return x_adv, loss


# ---------------------------------------------------------------------------------------------- AKD
# no CIFAR reference exists (spec single-teacher 2.7): attack = boyellow/AdaAD AT_helper.py L51-85 (Madry_PGD,
# the AdaAD paper's common inner settings); step = javier-maroto/kdmc src/kdmc/train/akd.py L22-34,
# pred_kt src/kdmc/train/base.py L405-409 (one teacher, weight 1), softXEnt src/kdmc/utils.py L23-25
def ref_akd(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None, *, beta: float = 0.5) -> tuple[Tensor, Tensor]:
    assert teacher is not None
    adv_inputs = madry_pgd(model, x, y)
    outputs = model(adv_inputs)
    opt.zero_grad()
    kt_preds = torch.sum(torch.stack([F.softmax(teacher(adv_inputs), dim=-1) * 1.0]), dim=0)
    kt_targets = beta * kt_preds + (1 - beta) * F.one_hot(y, num_classes=kt_preds.shape[-1])
    loss = -(kt_targets * F.log_softmax(outputs, dim=-1)).sum() / outputs.shape[0]
    loss.backward()
    opt.step()
    return adv_inputs, loss


# ---------------------------------------------------------------------------------------------- AdaAD
# boyellow/AdaAD AT_helper.py L8-48 (adaad_inner_loss)
def adaad_inner(model: nn.Module, teacher: nn.Module, x: Tensor) -> Tensor:
    """Both nets in eval mode; T(x') recomputed every step and not detached (the gradient passes through it)."""
    model.eval()
    teacher.eval()
    x_adv = x.detach() + gaussian_noise(x)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(teacher(x_adv), dim=1), reduction="none")
            loss_kl = torch.sum(loss_kl)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = linf_clip(x_adv, x)
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0).detach()


# boyellow/AdaAD main.py L326-353 (branch AdaAD), L386-387; inner AT_helper.py L8-48
def ref_adaad(
    model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, teacher: nn.Module | None,
    *, alpha: float = 1.0, cifar100: bool = False,
) -> tuple[Tensor, Tensor]:
    assert teacher is not None
    adv_inputs = adaad_inner(model, teacher, x)
    model.train()
    opt.zero_grad()
    ori_outputs = model(x)  # clean first, then adversarial; both train mode
    adv_outputs = model(adv_inputs)
    with torch.no_grad():
        teacher.eval()
        t_ori_outputs = teacher(x)
        t_adv_outputs = teacher(adv_inputs)
    kl1 = F.kl_div(F.log_softmax(adv_outputs, dim=1), F.softmax(t_adv_outputs.detach(), dim=1), reduction="none")
    kl2 = F.kl_div(F.log_softmax(ori_outputs, dim=1), F.softmax(t_ori_outputs.detach(), dim=1), reduction="none")
    if cifar100:  # explicit (1/B) * sum
        kl_loss1, kl_loss2 = (1 / len(adv_outputs)) * torch.sum(kl1), (1 / len(adv_outputs)) * torch.sum(kl2)
    else:  # nn.KLDivLoss() default: mean over B*C
        kl_loss1, kl_loss2 = kl1.mean(), kl2.mean()
    loss = alpha * kl_loss1 + (1 - alpha) * kl_loss2
    loss.backward()
    opt.step()
    return adv_inputs, loss


# ---------------------------------------------------------------------------------------------- cases
# (method, build overrides, dataset, reference step); the first case of every method is its default
CASES: list[tuple[str, str, dict[str, Any], str, RefStep]] = [
    ("pgd-at", "pgd-at", {}, "cifar10", ref_pgd_at),
    ("pgd-at-no-side-forward", "pgd-at", {"bn_side_forward": False}, "cifar10", functools.partial(ref_pgd_at, logging_forward=False)),
    ("trades", "trades", {}, "cifar10", ref_trades),
    ("trades-no-side-forward", "trades", {"bn_side_forward": False}, "cifar10", functools.partial(ref_trades, second_clean=False)),
    ("score", "score", {}, "cifar10", ref_score),
    ("score-clip-active", "score", {"clip_loss": 0.8}, "cifar10", functools.partial(ref_score, clip_loss=0.8)),
    ("ard", "ard", {}, "cifar10", ref_ard),
    ("ard-iad-settings", "ard", {"temperature": 1.0, "reduction": "batchmean"}, "cifar10", functools.partial(ref_ard, temp=1.0, elemmean=False)),
    ("ard-alpha-half", "ard", {"alpha": 0.5}, "cifar10", functools.partial(ref_ard, alpha=0.5)),
    ("rslad", "rslad", {}, "cifar10", ref_rslad),
    ("rslad-alpha-1", "rslad", {"alpha": 1.0}, "cifar10", functools.partial(ref_rslad, w_adv=1.0, w_nat=0.0)),
    ("akd", "akd", {}, "cifar10", ref_akd),
    ("adaad", "adaad", {}, "cifar10", ref_adaad),
    ("adaad-cifar100-batchmean", "adaad", {}, "cifar100", functools.partial(ref_adaad, cifar100=True)),
    ("adaad-alpha-half", "adaad", {"alpha": 0.5}, "cifar10", functools.partial(ref_adaad, alpha=0.5)),
]


@pytest.mark.parametrize(("name", "overrides", "dataset", "reference"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_matches_reference_over_three_batches(name: str, overrides: dict[str, Any], dataset: str, reference: RefStep) -> None:
    """Steps 1-2 share an epoch, step 3 starts the next, so within- and across-epoch behaviour both show."""
    roles = method_roles(name)
    teacher = teacher_net(1) if roles else None
    method = build(name, {role: teacher for role in roles}, num_classes=C, dataset=dataset, **overrides)
    b0, b1, b2 = parity_batches(0)
    epochs = [[b0, b1], [b2]]
    student = parity_net(0)
    ours = run_method(method, copy.deepcopy(student), epochs)
    ref = run_reference(reference, copy.deepcopy(student), epochs, teacher)
    assert all(step.state == {} for step in ours), "these methods keep no state; a new one must be compared here"
    for k, (x, _) in enumerate(b for batches in epochs for b in batches):  # the case is not vacuous
        assert (ref[k].x_adv - x).abs().max() > EPS / 2, f"step {k + 1}: the attack did not move"
    assert_same(ours, ref)
