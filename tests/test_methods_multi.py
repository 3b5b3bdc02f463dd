"""B-MTARD, MTARD and LMTN-in-AT against hand-written computations of the multi-teacher spec.

The balancer reference below (``ref_step``) is written from spec 3.3-3.6 with [EXT]'s own
ratio form of the EBB sign rule, independently of the implementation's helpers.
"""
from __future__ import annotations

import copy
import json
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advkd.core.distributed
from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.methods import build

from tiny_nets import C, bn_net, linear_net

BOTH = ("clean_teacher", "robust_teacher")


def make_batch(seed: int, n: int = 6):
    """tiny_nets.make_batch's (x, y) plus x_adv = x + 8/255 * random signs, all from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    x_adv = (x + (8 / 255) * torch.sign(torch.randn(x.shape, generator=g))).clamp(0, 1)
    return x, x_adv, y


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def km(q: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Spec 0.3: (1/(B*C)) sum q * (log(q + 1e-5) - log p_S)."""
    return (q * (torch.log(q + 1e-5) - log_softmax(student_logits))).sum() / q.numel()


def sign(v: float) -> float:
    return float((v > 0) - (v < 0))


def ref_step(st: dict, za, zn, sa, sn, *, ebb=True, nlb=True, tau_rate=0.001, weight_rate=0.025, beta=1.0, lo=1.0, hi=10.0, scale=1.0, factor=1.0):
    """One B-MTARD batch (spec 3.6): losses at the current tau, EBB, NLB, loss with the new weights.

    ``st`` holds tau_adv, tau_nat, w_adv, w_nat, loss_adv_0, loss_nat_0; returns (loss, new state).
    """
    st = dict(st)
    qa = softmax(za / st["tau_adv"])
    qn = softmax(zn / st["tau_nat"])
    la = scale * km(qa, sa)
    ln = scale * km(qn, sn)
    if ebb:
        ea = (qa * torch.log(qa + 1e-5)).sum().item() / qa.numel()
        en = (qn * torch.log(qn + 1e-5)).sum().item() / qn.numel()
        st["tau_adv"], st["tau_nat"] = (
            min(max(st["tau_adv"] - tau_rate * factor * sign(ea / en - 1), lo), hi),
            min(max(st["tau_nat"] - tau_rate * factor * sign(en / ea - 1), lo), hi),
        )
    if st["loss_adv_0"] is None:
        st["loss_adv_0"], st["loss_nat_0"] = la.item(), ln.item()
    if nlb:
        ra, rn = la.item() / st["loss_adv_0"], ln.item() / st["loss_nat_0"]
        ta, tn = ra**beta / (ra**beta + rn**beta), rn**beta / (ra**beta + rn**beta)
        wa = max(st["w_adv"] - weight_rate * factor * (st["w_adv"] - ta), 0.0)
        wn = max(st["w_nat"] - weight_rate * factor * (st["w_nat"] - tn), 0.0)
        st["w_adv"], st["w_nat"] = wa / (wa + wn), wn / (wa + wn)
    return st["w_adv"] * la + st["w_nat"] * ln, st


def init_state(tau_adv=1.0, tau_nat=1.0, w_adv=0.5, w_nat=0.5) -> dict:
    return {"tau_adv": tau_adv, "tau_nat": tau_nat, "w_adv": w_adv, "w_nat": w_nat, "loss_adv_0": None, "loss_nat_0": None}


def teachers(clean: nn.Module, robust: nn.Module) -> dict:
    return {"clean_teacher": clean, "robust_teacher": robust}


def assert_state(got: dict, want: dict, tol: float = 1e-6) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if v is None:
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(v, rel=tol, abs=tol), k


# ----------------------------------------------------------------------------- inner maximisation


@pytest.mark.parametrize("name", ["bmtard", "mtard", "lmtn"])
def test_perturb_is_eval_mode_ce_pgd_from_unclamped_gaussian_start(name):
    x, _, y = make_batch(0)
    x[:, :, 0, 0] = 0.0  # pixels at 0: an unclamped Gaussian start goes below 0
    s = bn_net(0)
    s.train()
    m = build(name, teachers(linear_net(1), linear_net(2)), steps=2)
    seen = []
    hook = s.register_forward_hook(lambda mod, inp, out: seen.append((mod.training, inp[0].min().item())))
    torch.manual_seed(7)
    x_adv = m.perturb(s, x, y)
    hook.remove()
    assert s.training, "perturb must restore train mode"
    assert int(s[1].num_batches_tracked) == 0, "the attack runs in eval mode (no BN update)"
    assert len(seen) == 2 and not any(training for training, _ in seen)
    assert seen[0][1] < 0, "the Gaussian start is not clamped before the first forward"
    # by hand: x0 = x + 0.001 N(0, I); 2 x (CE-mean sign step, project to 8/255, clamp [0,1])
    torch.manual_seed(7)
    xk = x + 0.001 * torch.randn_like(x)
    s.eval()
    for _ in range(2):
        xv = xk.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(s(xv), y), xv)
        xk = torch.min(torch.max(xk + 2 / 255 * g.sign(), x - 8 / 255), x + 8 / 255).clamp(0, 1)
    assert torch.allclose(x_adv, xk)


# ----------------------------------------------------------------------------- losses by hand


def test_bmtard_two_batches_by_hand():
    """First batch (L(0) set, weights move from 0.7/0.3 before the loss) and a second batch with
    the temperatures EBB chose on batch 1 and NLB relative losses; CIFAR-100 KL scale 10."""
    s = linear_net(0)
    tn, ta = linear_net(1, scale=6.0), linear_net(2, scale=0.5)  # confident clean, soft robust teacher
    m = build("bmtard", teachers(tn, ta), dataset="cifar100", tau_adv_init=2.0, tau_nat_init=3.0, w_adv_init=0.7, w_nat_init=0.3, tau_rate=0.25)
    st = init_state(2.0, 3.0, 0.7, 0.3)
    for seed in (0, 1):
        x, x_adv, y = make_batch(seed)
        loss, logs = m.loss(s, x, x_adv, y)
        tau_used = (st["tau_adv"], st["tau_nat"])
        expected, st = ref_step(st, ta(x_adv), tn(x), s(x_adv), s(x), scale=10.0, tau_rate=0.25)
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-8)
        assert_state(m.state_dict(), st)
        assert (logs["tau_adv"], logs["tau_nat"]) == pytest.approx(tau_used)
        assert (logs["w_adv"], logs["w_nat"]) == pytest.approx((st["w_adv"], st["w_nat"]))
    # the confident clean teacher was heated, the soft robust one cooled, both by 0.25 per batch
    assert st["tau_nat"] == pytest.approx(3.5) and st["tau_adv"] == pytest.approx(1.5)
    # loss values are recorded with the scale, and the first batch's weights already moved
    assert m.state_dict()["loss_adv_0"] > 0 and m.state_dict()["w_adv"] < 0.7


def test_bmtard_backward_reaches_student_only_through_both_terms():
    x, x_adv, y = make_batch(0)
    s = linear_net(0)
    m = build("bmtard", teachers(linear_net(1), linear_net(2)))
    loss, _ = m.loss(s, x, x_adv, y)
    loss.backward()
    assert s[1].weight.grad is not None and s[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for t in m.teachers.values() for p in t.parameters())


def test_mtard_is_nlb_only_with_unit_temperatures_and_matches_eccv_update():
    s = linear_net(0)
    tn, ta = linear_net(1, scale=8.0), linear_net(2, scale=0.3)  # EBB would move tau_nat here
    m = build("mtard", teachers(tn, ta))
    assert m.p.ebb is False and m.p.nlb is True
    st = init_state()
    w_nat_eccv = 0.5
    l0 = None
    for seed in range(4):
        x, x_adv, y = make_batch(seed)
        with torch.no_grad():  # a different student every batch, so the relative losses move
            s[1].weight.mul_(0.5)
        loss, logs = m.loss(s, x, x_adv, y)
        expected, st = ref_step(st, ta(x_adv), tn(x), s(x_adv), s(x), ebb=False)
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-8)
        assert logs["tau_adv"] == 1.0 and logs["tau_nat"] == 1.0
        # ECCV form: EMA on w_nat only, w_adv = 1 - w_nat (spec section 2)
        la, ln = km(softmax(ta(x_adv)), s(x_adv)).item(), km(softmax(tn(x)), s(x)).item()
        l0 = l0 or (la, ln)
        ra, rn = la / l0[0], ln / l0[1]
        w_nat_eccv = w_nat_eccv - 0.025 * (w_nat_eccv - rn / (ra + rn))
        assert m.w_nat == pytest.approx(w_nat_eccv, abs=1e-7)
        assert m.w_adv == pytest.approx(1 - w_nat_eccv, abs=1e-7)
    assert m.tau_adv == 1.0 and m.tau_nat == 1.0
    assert m.w_nat != pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("dataset,scale", [("cifar10", 1.0), ("cifar100", 10.0)])
@pytest.mark.parametrize("mode", ["same", "clean", "split"])
def test_lmtn_loss_by_hand(dataset, scale, mode):
    s = linear_net(0)
    tn, ta = linear_net(1, scale=3.0), linear_net(2)
    m = build("lmtn", teachers(tn, ta), dataset=dataset, lambda_nat=0.3, lambda_adv=0.7, w_adv=0.6, w_nat=0.4, temperature=2.0, teacher_input=mode)

    def target(u_nat, u_adv):
        return softmax((0.3 * tn(u_nat) + 0.7 * ta(u_adv)) / 2.0)

    for seed in (0, 1):  # fixed weights: the same formula on every batch, no state
        x, x_adv, y = make_batch(seed)
        loss, logs = m.loss(s, x, x_adv, y)
        if mode == "same":
            qa, qn = target(x_adv, x_adv), target(x, x)
        elif mode == "clean":
            qa = qn = target(x, x)
        else:
            qa = qn = target(x, x_adv)
        expected = scale * (0.6 * km(qa, s(x_adv)) + 0.4 * km(qn, s(x)))
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-8)
        assert logs["loss_adv"] == pytest.approx(scale * km(qa, s(x_adv)).item(), rel=1e-5)
    assert m.state_dict() == {}


def test_lmtn_defaults_average_logits_half_half():
    s = linear_net(0)
    tn, ta = linear_net(1, scale=3.0), linear_net(2)
    m = build("lmtn", teachers(tn, ta))
    x, x_adv, y = make_batch(3)
    loss, _ = m.loss(s, x, x_adv, y)
    qa = softmax(0.5 * tn(x_adv) + 0.5 * ta(x_adv))
    qn = softmax(0.5 * tn(x) + 0.5 * ta(x))
    assert torch.allclose(loss, 0.5 * km(qa, s(x_adv)) + 0.5 * km(qn, s(x)), rtol=1e-6)


# ----------------------------------------------------------------------------- BN order, teacher calls


@pytest.mark.parametrize("name,calls", [("bmtard", 1), ("mtard", 1), ("lmtn", 2)])
def test_bn_updates_adv_then_clean_and_teacher_inputs(name, calls):
    x, x_adv, y = make_batch(0)
    s = bn_net(0)
    s.train()
    tn, ta = bn_net(1), bn_net(2)
    inputs = {"clean": [], "robust": []}
    tn.register_forward_hook(lambda mod, inp, out: inputs["clean"].append(inp[0]))
    ta.register_forward_hook(lambda mod, inp, out: inputs["robust"].append(inp[0]))
    m = build(name, teachers(tn, ta))
    order = []
    s.register_forward_hook(lambda mod, inp, out: order.append(inp[0]))
    m.loss(s, x, x_adv, y)
    assert int(s[1].num_batches_tracked) == 2
    assert order[0] is x_adv and order[1] is x, "student forwards: S(x') then S(x), both in train mode"
    assert len(inputs["clean"]) == calls and len(inputs["robust"]) == calls
    if name == "lmtn":
        assert {id(t) for t in inputs["clean"]} == {id(x), id(x_adv)} == {id(t) for t in inputs["robust"]}
    else:
        assert inputs["clean"][0] is x and inputs["robust"][0] is x_adv
    assert int(tn[1].num_batches_tracked) == 0 and int(ta[1].num_batches_tracked) == 0


# ----------------------------------------------------------------------------- EBB


@pytest.mark.parametrize("confident", ["clean", "robust"])
def test_ebb_heats_the_lower_entropy_teacher(confident):
    sharp, soft = linear_net(1, scale=10.0), linear_net(2, scale=0.2)
    tn, ta = (sharp, soft) if confident == "clean" else (soft, sharp)
    m = build("bmtard", teachers(tn, ta))
    x, x_adv, y = make_batch(0)
    _, logs = m.loss(linear_net(0), x, x_adv, y)
    low, high = ("entropy_nat", "entropy_adv") if confident == "clean" else ("entropy_adv", "entropy_nat")
    assert logs[low] < logs[high]
    # logged entropies are mean Shannon entropies in nats (with the 1e-5 smoothing)
    qa = softmax(ta(x_adv))
    assert logs["entropy_adv"] == pytest.approx(-(qa * torch.log(qa + 1e-5)).sum(1).mean().item(), rel=1e-5)
    assert 0 < logs[high] <= math.log(C) + 1e-6
    heated, pinned = ("tau_nat", "tau_adv") if confident == "clean" else ("tau_adv", "tau_nat")
    state = m.state_dict()
    assert state[heated] == pytest.approx(1.001, abs=1e-12)
    assert state[pinned] == 1.0, "the higher-entropy teacher cannot cool below tau_min = 1"


def test_ebb_moves_exactly_rate_times_factor_in_opposite_directions():
    tn, ta = linear_net(1, scale=10.0), linear_net(2, scale=0.2)
    x, x_adv, y = make_batch(0)
    for factor in (1.0, 0.1):
        m = build("bmtard", teachers(tn, ta), tau_adv_init=5.0, tau_nat_init=5.0, tau_rate=0.01)
        m.start_epoch(3, factor)
        for k in range(1, 4):
            m.loss(linear_net(0), x, x_adv, y)
            assert m.tau_nat == pytest.approx(5.0 + 0.01 * factor * k, abs=1e-12)
            assert m.tau_adv == pytest.approx(5.0 - 0.01 * factor * k, abs=1e-12)


@pytest.mark.parametrize("confident", ["clean", "robust"])
def test_ebb_never_leaves_its_range(confident):
    sharp, soft = linear_net(1, scale=10.0), linear_net(2, scale=0.2)
    tn, ta = (sharp, soft) if confident == "clean" else (soft, sharp)
    heated = "tau_nat" if confident == "clean" else "tau_adv"
    s = linear_net(0)
    m = build("bmtard", teachers(tn, ta), tau_rate=0.7)
    seen = []
    for seed in range(40):
        x, x_adv, y = make_batch(seed)
        _, logs = m.loss(s, x, x_adv, y)
        seen += [logs["tau_adv"], logs["tau_nat"], m.tau_adv, m.tau_nat]
    assert min(seen) >= 1.0 and max(seen) <= 10.0
    assert m.state_dict()[heated] == 10.0, "with rate 0.7 the upper clamp is reached"
    # upper clamp from the start: the confident teacher cannot heat above 10, the other cools
    m = build("bmtard", teachers(tn, ta), tau_adv_init=10.0, tau_nat_init=10.0)
    m.loss(s, *make_batch(0))
    cooled = "tau_adv" if heated == "tau_nat" else "tau_nat"
    assert m.state_dict()[heated] == 10.0 and m.state_dict()[cooled] == pytest.approx(10.0 - 0.001, abs=1e-12)


def test_new_temperature_applies_from_the_next_batch():
    tn, ta = linear_net(1, scale=10.0), linear_net(2, scale=0.2)
    s = linear_net(0)
    m = build("bmtard", teachers(tn, ta), nlb=False, tau_rate=2.0)
    x, x_adv, y = make_batch(0)

    def loss_at(tau_adv, tau_nat, xx, xa):
        return 0.5 * km(softmax(ta(xa) / tau_adv), s(xa)) + 0.5 * km(softmax(tn(xx) / tau_nat), s(xx))

    loss1, _ = m.loss(s, x, x_adv, y)
    assert (m.tau_adv, m.tau_nat) == (1.0, 3.0)
    assert torch.allclose(loss1, loss_at(1.0, 1.0, x, x_adv), rtol=1e-6)
    assert not torch.allclose(loss1, loss_at(1.0, 3.0, x, x_adv), rtol=1e-3)
    x2, xa2, y2 = make_batch(1)
    loss2, _ = m.loss(s, x2, xa2, y2)
    assert m.tau_nat == 5.0
    assert torch.allclose(loss2, loss_at(1.0, 3.0, x2, xa2), rtol=1e-6)
    assert not torch.allclose(loss2, loss_at(1.0, 5.0, x2, xa2), rtol=1e-3)


def test_ebb_off_keeps_temperatures():
    tn, ta = linear_net(1, scale=10.0), linear_net(2, scale=0.2)
    m = build("bmtard", teachers(tn, ta), ebb=False, tau_adv_init=2.0, tau_nat_init=2.0, tau_rate=0.5)
    s = linear_net(0)
    st = init_state(2.0, 2.0)
    for seed in range(3):
        x, x_adv, y = make_batch(seed)
        loss, logs = m.loss(s, x, x_adv, y)
        expected, st = ref_step(st, ta(x_adv), tn(x), s(x_adv), s(x), ebb=False)
        assert torch.allclose(loss, expected, rtol=1e-6)
        assert logs["tau_adv"] == logs["tau_nat"] == m.tau_adv == m.tau_nat == 2.0


# ----------------------------------------------------------------------------- NLB


def test_nlb_moves_weight_to_the_loss_that_decreased_less():
    tn, ta = linear_net(1, scale=2.0), linear_net(2)
    m = build("bmtard", teachers(tn, ta), ebb=False)
    x, x_adv, y = make_batch(0)
    _, logs = m.loss(linear_net(0), x, x_adv, y)
    l0 = (m.loss_adv_0, m.loss_nat_0)
    assert l0 == (pytest.approx(logs["loss_adv"]), pytest.approx(logs["loss_nat"]))
    assert logs["r_adv"] == logs["r_nat"] == 1.0 and (m.w_adv, m.w_nat) == (0.5, 0.5)
    # a student that copies the robust teacher: L_adv collapses, L_nat does not
    good_adv = copy.deepcopy(ta)
    x2, xa2, y2 = make_batch(1)
    loss2, logs2 = m.loss(good_adv, x2, xa2, y2)
    assert logs2["r_adv"] < logs2["r_nat"]
    assert m.w_nat > 0.5 > m.w_adv and m.w_adv + m.w_nat == pytest.approx(1.0, abs=1e-15)
    ra, rn = logs2["r_adv"], logs2["r_nat"]
    assert m.w_nat == pytest.approx(0.5 - 0.025 * (0.5 - rn / (ra + rn)), abs=1e-9)
    # the loss of the same batch already uses the updated weights
    assert loss2.item() == pytest.approx(m.w_adv * logs2["loss_adv"] + m.w_nat * logs2["loss_nat"], rel=1e-6)
    assert loss2.item() != pytest.approx(0.5 * logs2["loss_adv"] + 0.5 * logs2["loss_nat"], rel=1e-4)
    # L(0) is the very first batch's, never refreshed
    for seed in (2, 3):
        m.loss(linear_net(seed), *make_batch(seed))
    assert (m.loss_adv_0, m.loss_nat_0) == l0


@pytest.mark.parametrize("beta", [0.5, 4.0, 10.0])
def test_nlb_beta_by_hand(beta):
    tn, ta = linear_net(1, scale=2.0), linear_net(2)
    m = build("bmtard", teachers(tn, ta), nlb_beta=beta)
    st = init_state()
    students = [linear_net(0), copy.deepcopy(ta), linear_net(5)]
    for seed, s in enumerate(students):
        x, x_adv, y = make_batch(seed)
        loss, _ = m.loss(s, x, x_adv, y)
        expected, st = ref_step(st, ta(x_adv), tn(x), s(x_adv), s(x), beta=beta)
        assert torch.allclose(loss, expected, rtol=1e-6)
        assert_state(m.state_dict(), st)


def test_nlb_weights_stay_nonnegative_and_sum_to_one():
    tn, ta = linear_net(1, scale=2.0), linear_net(2)
    m = build("bmtard", teachers(tn, ta), weight_rate=1.0, nlb_beta=10.0, w_adv_init=0.9, w_nat_init=0.1)
    for seed in range(12):
        s = copy.deepcopy(ta) if seed % 3 == 1 else linear_net(seed)
        _, logs = m.loss(s, *make_batch(seed))
        assert m.w_adv >= 0 and m.w_nat >= 0
        assert m.w_adv + m.w_nat == pytest.approx(1.0, abs=1e-12)
        # weight_rate 1 jumps to the target r_i^beta / sum_j r_j^beta
        ra, rn = logs["r_adv"] ** 10.0, logs["r_nat"] ** 10.0
        assert m.w_adv == pytest.approx(ra / (ra + rn), abs=1e-6)


def test_nlb_off_keeps_initial_weights_but_logs_relative_losses():
    tn, ta = linear_net(1, scale=2.0), linear_net(2)
    m = build("bmtard", teachers(tn, ta), nlb=False)
    _ = m.loss(linear_net(0), *make_batch(0))
    loss, logs = m.loss(copy.deepcopy(ta), *make_batch(1))
    assert logs["r_adv"] < logs["r_nat"]
    assert (m.w_adv, m.w_nat) == (0.5, 0.5) and (logs["w_adv"], logs["w_nat"]) == (0.5, 0.5)
    assert loss.item() == pytest.approx(0.5 * logs["loss_adv"] + 0.5 * logs["loss_nat"], rel=1e-6)


def test_rate_factor_scales_the_weight_rate():
    tn, ta = linear_net(1, scale=2.0), linear_net(2)
    moves = []
    for factor in (1.0, 0.1):
        m = build("bmtard", teachers(tn, ta), ebb=False)  # EBB would change batch 2's losses
        m.start_epoch(215, factor)
        m.loss(linear_net(0), *make_batch(0))
        m.loss(copy.deepcopy(ta), *make_batch(1))
        moves.append(m.w_nat - 0.5)
    assert moves[0] > 0
    assert moves[1] == pytest.approx(moves[0] / 10, rel=1e-9)


# ----------------------------------------------------------------------------- state


def test_state_roundtrip_reproduces_the_next_batch_exactly():
    tn, ta = linear_net(1, scale=6.0), linear_net(2, scale=0.5)
    s = linear_net(0)
    kwargs = dict(tau_rate=0.1)
    fresh = build("bmtard", teachers(tn, ta), **kwargs)
    assert fresh.state_dict() == {"tau_adv": 1.0, "tau_nat": 1.0, "w_adv": 0.5, "w_nat": 0.5, "loss_adv_0": None, "loss_nat_0": None}
    assert json.loads(json.dumps(fresh.state_dict())) == fresh.state_dict()
    m = build("bmtard", teachers(tn, ta), **kwargs)
    m.loss(s, *make_batch(0))
    m.loss(copy.deepcopy(ta), *make_batch(1))
    restored = build("bmtard", teachers(tn, ta), **kwargs)
    restored.load_state_dict(json.loads(json.dumps(m.state_dict())))
    assert restored.state_dict() == m.state_dict()
    assert m.epoch_metrics() == m.state_dict()
    batch = make_batch(2)
    loss_a, logs_a = m.loss(s, *batch)
    loss_b, logs_b = restored.loss(s, *batch)
    assert torch.equal(loss_a, loss_b) and logs_a == logs_b
    assert restored.state_dict() == m.state_dict()
    with pytest.raises(AdvkdError, match="resume state"):
        restored.load_state_dict({"tau_adv": 1.0})


def test_invalid_settings_are_rejected():
    t = teachers(linear_net(1), linear_net(2))
    with pytest.raises(AdvkdError, match="tau_adv_init"):
        build("bmtard", t, tau_adv_init=0.5)
    with pytest.raises(AdvkdError, match="tau_min"):
        build("bmtard", t, tau_min=3.0, tau_max=2.0)
    with pytest.raises(AdvkdError, match="weight_rate"):
        build("bmtard", t, weight_rate=1.5)
    with pytest.raises(AdvkdError, match="temperature"):
        build("lmtn", t, temperature=0.0)
    with pytest.raises(AdvkdError, match="teacher_input must be one of"):
        build("lmtn", t, teacher_input="both")


# ----------------------------------------------------------------------------- DDP: reduced statistics


class FakeWorld:
    """Ranks as threads; ``all_reduce_sum`` sums every rank's tensor through a barrier."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: dict[int, torch.Tensor] = {}
        self.local = threading.local()
        self.calls = 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.slots[self.local.rank] = t.detach().clone()
        self.barrier.wait()
        total = sum(self.slots[r] for r in range(self.n))
        if self.local.rank == 0:
            self.calls += 1
        self.barrier.wait()
        t.copy_(total)
        return t

    def run(self, fns):
        results, errors = [None] * self.n, []

        def target(r):
            self.local.rank = r
            try:
                results[r] = fns[r]()
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def test_two_ranks_decide_as_one_process_on_the_whole_batch(monkeypatch):
    tn, ta = linear_net(1, scale=6.0), linear_net(2, scale=0.5)
    s = linear_net(0)
    world = FakeWorld(2)
    monkeypatch.setattr(advkd.core.distributed, "all_reduce_sum", world.all_reduce_sum)
    ranks = [build("bmtard", teachers(tn, ta), tau_rate=0.1) for _ in range(2)]
    single = build("bmtard", teachers(tn, ta), tau_rate=0.1)
    for step in range(3):
        (x0, xa0, y0), (x1, xa1, y1) = make_batch(10 * step), make_batch(10 * step + 1)
        student = s if step != 1 else copy.deepcopy(ta)
        world.run([lambda: ranks[0].loss(student, x0, xa0, y0), lambda: ranks[1].loss(student, x1, xa1, y1)])
        monkeypatch.setattr(advkd.core.distributed, "all_reduce_sum", lambda t: t)
        single.loss(student, torch.cat([x0, x1]), torch.cat([xa0, xa1]), torch.cat([y0, y1]))
        monkeypatch.setattr(advkd.core.distributed, "all_reduce_sum", world.all_reduce_sum)
        assert ranks[0].state_dict() == ranks[1].state_dict(), "every rank holds identical tau and w"
        assert_state(ranks[0].state_dict(), single.state_dict(), tol=1e-5)
    assert world.calls >= 3
    assert single.tau_nat > 1.0 and single.w_nat != 0.5


class FixedLogits(nn.Module):
    def forward(self, x):
        return torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0]).expand(x.shape[0], C).clone()


class CenteredLinear(nn.Module):
    """Confident on random images, uniform on a constant 0.5 image."""

    def __init__(self):
        super().__init__()
        self.lin = linear_net(3, scale=200.0)[1]
        self.lin.bias.data.zero_()

    def forward(self, x):
        return self.lin((x - 0.5).flatten(1))


def test_other_ranks_entropies_flip_the_ebb_update(monkeypatch):
    tn, ta = FixedLogits(), CenteredLinear()
    s = linear_net(0)
    x0, xa0, y0 = make_batch(0)
    x1 = torch.full_like(x0, 0.5)
    # precondition: rank 0 alone sees the robust teacher sharper than the clean one; rank 1 the opposite
    h = lambda z: -(softmax(z) * torch.log(softmax(z) + 1e-5)).sum(1).mean().item()  # noqa: E731
    assert h(ta(xa0)) < h(tn(x0)) < (h(ta(xa0)) + h(ta(x1))) / 2

    alone = build("bmtard", teachers(tn, ta))
    alone.loss(s, x0, xa0, y0)
    assert alone.tau_adv == pytest.approx(1.001) and alone.tau_nat == 1.0

    world = FakeWorld(2)
    monkeypatch.setattr(advkd.core.distributed, "all_reduce_sum", world.all_reduce_sum)
    ranks = [build("bmtard", teachers(tn, ta)) for _ in range(2)]
    logs = world.run([lambda: ranks[0].loss(s, x0, xa0, y0)[1], lambda: ranks[1].loss(s, x1, x1, y0)[1]])
    for m in ranks:
        assert m.tau_adv == 1.0 and m.tau_nat == pytest.approx(1.001)
    assert logs[0]["entropy_adv"] == logs[1]["entropy_adv"] > logs[0]["entropy_nat"]
    # NLB's L(0) is the all-rank mean loss, not rank 0's own
    assert ranks[0].loss_adv_0 == pytest.approx((logs[0]["loss_adv"] + logs[1]["loss_adv"]) / 2, rel=1e-6)
    assert ranks[0].loss_adv_0 != pytest.approx(logs[0]["loss_adv"], rel=1e-3)


# ----------------------------------------------------------------------------- CLI end to end


FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, "--runs-dir", str(root)]) == 0
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST, "--set", "method.steps=2", "--runs-dir", str(root)]) == 0
    return root


def distill(root, method: str, *sets: str, name: str | None = None) -> dict:
    args = ["distill", "--method", method, "--student", "tinycnn", "--clean-teacher", "tinycnn", "--robust-teacher", "tinycnn"]
    args += [*FAST, "--set", "method.steps=2", "--runs-dir", str(root)]
    for s in sets:
        args += ["--set", s]
    if name:
        args += ["--name", name]
    assert main(args) == 0
    path = next(root.glob(f"distill/synthetic/{name or f'tinycnn-{method}-*'}/metrics.jsonl"))
    return json.loads(path.read_text().splitlines()[-1])


@pytest.mark.parametrize("method", ["bmtard", "mtard", "lmtn"])
def test_cli_trains_each_method(runs, method):
    row = distill(runs, method)
    assert math.isfinite(row["train_loss"]) and "train_loss_adv" in row and "train_loss_nat" in row
    if method == "lmtn":
        return
    for key in ("r_adv", "r_nat", "entropy_adv", "entropy_nat", "tau_adv", "tau_nat", "w_adv", "w_nat"):
        assert math.isfinite(row[f"train_{key}"]), key
    assert row["method_w_adv"] + row["method_w_nat"] == pytest.approx(1.0)
    assert row["method_loss_adv_0"] > 0
    if method == "mtard":
        assert row["method_tau_adv"] == row["method_tau_nat"] == 1.0
    else:
        assert max(row["method_tau_adv"], row["method_tau_nat"]) > 1.0


def test_cli_ablation_switches(runs):
    row = distill(runs, "bmtard", "method.ebb=false", "method.nlb=false", "method.tau_adv_init=2", name="ablation")
    assert row["method_tau_adv"] == 2.0 and row["method_tau_nat"] == 1.0
    assert row["method_w_adv"] == row["method_w_nat"] == 0.5
    assert row["train_tau_adv"] == 2.0
