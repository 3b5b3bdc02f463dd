"""Fair-ARD, Fair-RSLAD, ABSLD and SCORE: hand-computed losses and epoch-level behaviour.

Formulas are written out with softmax / log here (multi-teacher spec 4-6); the implementation's
helpers are not used to compute expectations.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_runs import FAST
from torch import nn

from advkd.attacks.engine import random_start
from advkd.cli import main
from advkd.methods import build

from tiny_nets import C, bn_net, linear_net, make_batch

EPS = 8 / 255
STEP = 2 / 255


def softmax(z):
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def log_softmax(z):
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def kl_rows(p, q_logits):
    """Per-sample KL(p || softmax(q_logits)) = sum_k p_k (log p_k - log q_k)."""
    return (p * (torch.log(p) - log_softmax(q_logits))).sum(dim=1)


def pgd_step(model, x0, x, loss_of_logits):
    """One Linf step from x0: x0 + 2/255 sign(grad), projected to the 8/255 ball of x, clipped to [0,1]."""
    xa = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of_logits(model(xa)), xa)
    out = x0 + STEP * g.sign()
    return torch.min(torch.max(out, x - EPS), x + EPS).clamp(0, 1)


def fair_weights(kappa_bar, beta, smoothing, lo=5 / 6, hi=2.5):
    raw = [(k + smoothing) ** (-beta) for k in kappa_bar]
    total = sum(raw)
    return [min(max(r * len(raw) / total, lo), hi) for r in raw]


WEIGHTS = [0.9, 1.3, 2.0, 1.0, 0.85]


# ============================================================================ Fair-ARD: losses


@pytest.mark.parametrize("alpha", [1.0, 0.75])
def test_fair_ard_loss_by_hand(batch, alpha):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    tau = 4.0
    m = build("fair-ard", {"teacher": t}, num_classes=C, init="zero", steps=1, temperature=tau, alpha=alpha)
    m.weights = list(WEIGHTS)
    x_adv = m.perturb(s, x, y)
    assert torch.allclose(x_adv, pgd_step(s, x, x, lambda z: F.cross_entropy(z, y, reduction="sum")))
    loss, logs = m.loss(s, x, x_adv, y)
    w = torch.tensor(WEIGHTS)[y]
    q = softmax(t(x) / tau)  # teacher on CLEAN x
    kl_i = kl_rows(q, s(x_adv) / tau) / C  # KLDivLoss() default on one C-vector: mean over classes
    ce_i = -log_softmax(s(x)).gather(1, y[:, None]).squeeze(1)
    expected = alpha * tau**2 * (w * kl_i).mean() + (1 - alpha) * (w * ce_i).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert logs["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_fair_ard_default_is_t30_alpha1(batch):
    x, y = batch
    x = x.double()  # KL at T = 30 is tiny: float32 cancellation would dominate the comparison
    s, t = linear_net(0).double(), linear_net(1).double()
    m = build("fair-ard", {"teacher": t}, num_classes=C)
    assert (m.p.temperature, m.p.alpha, m.p.beta, m.p.init, m.p.clamp_init, m.p.attack_bn) == (30.0, 1.0, 2.0, "uniform", False, "train")
    x_adv = (x + 0.03).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    expected = 900 * (kl_rows(softmax(t(x) / 30), s(x_adv) / 30) / C).mean()
    assert torch.allclose(loss, expected, rtol=1e-10)


# ============================================================================ Fair-RSLAD: losses


def test_fair_rslad_loss_by_hand(batch):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("fair-rslad", {"teacher": t}, num_classes=C, init="zero", steps=1)
    assert m.p.smoothing == 0.0 and m.p.alpha == pytest.approx(5 / 6)
    m.weights = list(WEIGHTS)
    q = softmax(t(x))
    x_adv = m.perturb(s, x, y)
    assert torch.allclose(x_adv, pgd_step(s, x, x, lambda z: kl_rows(q, z).sum()))  # unweighted KL-sum inner loss
    loss, _ = m.loss(s, x, x_adv, y)
    w = torch.tensor(WEIGHTS)[y][:, None]

    def klm_w(z):
        return (w * q * (torch.log(q + 1e-5) - log_softmax(z))).sum() / (6 * C)

    expected = 5 / 6 * klm_w(s(x_adv)) + 1 / 6 * klm_w(s(x))
    assert torch.allclose(loss, expected, atol=1e-7)


# ============================================================================ kappa and class weights


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad"])
@pytest.mark.parametrize("steps", [2, 3])
def test_kappa_counts_iterates_but_not_the_final_one(name, steps):
    x, _ = make_batch(4)
    s, t = linear_net(0), linear_net(1)
    pred = s(x).argmax(1)
    y = pred.clone()
    y[3:] = (pred[3:] + 1) % C  # first three right, last three wrong, at every iterate (eps = 0)
    m = build(name, {"teacher": t}, num_classes=C, eps="0", steps=steps)
    m.perturb(s, x, y)
    state = m.state_dict()
    expected_sum = torch.zeros(C, dtype=torch.float64).index_add_(0, y, (y == pred).double() * steps)
    assert state["kappa_sum"] == expected_sum.tolist()  # steps+1 per correct sample if the final iterate counted
    assert state["count"] == torch.bincount(y, minlength=C).double().tolist()


def test_kappa_stops_counting_when_the_attack_succeeds():
    """A model that is right only at the clean point: kappa = 1 (x'_0 = x), whatever the step count."""
    x, _ = make_batch(5)
    y = torch.zeros(6, dtype=torch.long)

    class OnlyAtX(nn.Module):
        def __init__(self, ref):
            super().__init__()
            self.ref = ref
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, u):
            shift = (u - self.ref).flatten(1).sum(1, keepdim=True)  # 0 at x, > 0 after one ascent step
            return torch.cat([1e-3 - self.w * shift, torch.zeros(u.shape[0], C - 1)], 1)

    s = OnlyAtX(x)
    assert (s(x).argmax(1) == 0).all()
    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C, init="zero", steps=4)
    x_adv = m.perturb(s, x, y)
    assert (s(x_adv).argmax(1) != 0).all()
    assert m.state_dict()["kappa_sum"][0] == 6.0  # only x'_0 counted, for each of the 6 samples


def test_weights_apply_from_the_next_epoch_only(batch):
    x, _ = batch
    s, t = linear_net(0), linear_net(1)
    y = s(x).argmax(1)
    y[::2] = (y[::2] + 2) % C  # some classes right, some wrong: kappa_bar differs across classes
    m = build("fair-ard", {"teacher": t}, num_classes=C, init="zero", steps=3, alpha=0.5, temperature=2.0, class_stats="counted")
    unweighted = build("fair-ard", {"teacher": t}, num_classes=C, init="zero", steps=3, alpha=0.5, temperature=2.0)
    m.start_epoch(0, 1.0)
    assert m.weights == [1.0] * C  # epoch 1: w = 1
    x_adv = m.perturb(s, x, y)
    kappa_sum = torch.tensor(m.state_dict()["kappa_sum"])
    count = torch.tensor(m.state_dict()["count"])
    loss0, _ = m.loss(s, x, x_adv, y)
    assert torch.allclose(loss0, unweighted.loss(s, x, x_adv, y)[0])  # still w = 1 within the epoch
    assert m.weights == [1.0] * C
    m.end_epoch(0, 1.0)
    seen = count > 0
    kappa_bar = (kappa_sum[seen] / count[seen]).tolist()
    expected = torch.ones(C, dtype=torch.float64)
    expected[seen] = torch.tensor(fair_weights(kappa_bar, 2.0, 1e-5), dtype=torch.float64)
    assert m.weights == pytest.approx(expected.tolist(), rel=1e-12)
    assert m.weights != [1.0] * C
    m.start_epoch(1, 1.0)
    loss1, _ = m.loss(s, x, x_adv, y)
    unweighted.weights = list(m.weights)
    assert torch.allclose(loss1, unweighted.loss(s, x, x_adv, y)[0])
    assert not torch.allclose(loss1, loss0)


def _with_sums(m, kappa_sum, count):
    state = m.state_dict()
    state.update(kappa_sum=[float(v) for v in kappa_sum], count=[float(v) for v in count])
    m.load_state_dict(state)


def test_normalisation_comes_before_the_clamp():
    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C)
    kappa_bar = [10.0, 10.0, 10.0, 10.0, 1.0]
    _with_sums(m, [k * 4 for k in kappa_bar], [4] * C)
    m.end_epoch(0, 1.0)
    # normalise -> [0.048, ..., 4.81], then clamp -> [5/6, ..., 5/2]
    assert m.weights == pytest.approx([5 / 6] * 4 + [2.5])
    raw = [(k + 1e-5) ** -2 for k in kappa_bar]
    clamp_first = [min(max(r, 5 / 6), 2.5) for r in raw]
    wrong = [c * C / sum(clamp_first) for c in clamp_first]  # the other order gives different weights
    assert m.weights != pytest.approx(wrong, rel=1e-3)
    assert sum(m.weights) != pytest.approx(C)


def test_weights_unclamped_region_and_harder_classes_weigh_more():
    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C)
    kappa_bar = [5.0, 4.6, 4.8, 4.4, 5.2]
    _with_sums(m, [k * 3 for k in kappa_bar], [3] * C)
    m.end_epoch(0, 1.0)
    expected = fair_weights(kappa_bar, 2.0, 1e-5)
    assert all(5 / 6 < e < 2.5 for e in expected)
    assert m.weights == pytest.approx(expected, rel=1e-12)
    assert sum(m.weights) == pytest.approx(C)
    order = sorted(range(C), key=lambda c: kappa_bar[c])
    assert [m.weights[c] for c in order] == sorted(m.weights, reverse=True)  # lower kappa_bar, larger weight
    assert m.kappa_mean == pytest.approx(kappa_bar)


def test_counted_class_sizes_and_unseen_classes():
    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C, class_stats="counted")
    m.weights = [1.7, 1.0, 1.0, 1.0, 1.0]
    _with_sums(m, [0, 12, 30, 10, 40], [0, 4, 6, 2, 8])  # class 0 unseen; kappa_bar = [-, 3, 5, 5, 5]
    m.end_epoch(3, 1.0)
    assert m.weights[0] == 1.7  # kept
    assert m.weights[1:] == pytest.approx(fair_weights([3.0, 5.0, 5.0, 5.0], 2.0, 1e-5))
    assert m.kappa_mean[0] is None


def test_reference_class_stats_divide_by_n_over_c_and_weigh_absent_classes():
    """The default (Fair-ARD.py after the epoch loop): kappa sums / (N/C) for all C classes."""
    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C)
    m.weights = [1.7, 1.0, 1.0, 1.0, 1.0]
    _with_sums(m, [0, 12, 30, 10, 40], [0, 4, 6, 2, 8])  # N/C = 20/5 = 4; class 0 absent: kappa_bar 0
    m.end_epoch(3, 1.0)
    assert m.kappa_mean == pytest.approx([0.0, 3.0, 7.5, 2.5, 10.0])
    assert m.weights == pytest.approx(fair_weights([0.0, 3.0, 7.5, 2.5, 10.0], 2.0, 1e-5))
    assert m.weights[0] == 2.5  # the absent class gets the largest weight, not its old 1.7


def test_fair_rslad_has_no_smoothing_and_survives_a_zero_kappa():
    m = build("fair-rslad", {"teacher": linear_net(1)}, num_classes=C)
    kappa_bar = [2.0, 4.0, 3.0, 5.0, 6.0]
    _with_sums(m, kappa_bar, [1] * C)
    m.end_epoch(0, 1.0)
    assert m.weights == pytest.approx(fair_weights(kappa_bar, 2.0, 0.0), rel=1e-12)
    _with_sums(m, [0, 4, 3, 5, 6], [1] * C)
    m.end_epoch(1, 1.0)
    assert m.weights == pytest.approx([2.5] + [5 / 6] * 4)  # limit of (0)^-2: all mass on class 0, then clamp


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad"])
def test_fair_weights_use_the_all_reduced_statistics(monkeypatch, name):
    import advkd.methods.fair as fair

    other_sum = torch.tensor([0.0, 9.0, 1.0, 30.0, 4.0], dtype=torch.float64)
    other_count = torch.tensor([3.0, 3.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    calls = []

    def fake_all_reduce(t):
        calls.append(t.numel())
        t.add_(torch.cat([other_sum, other_count]).to(t.device))
        return t

    monkeypatch.setattr(fair, "all_reduce_sum", fake_all_reduce)
    m = build(name, {"teacher": linear_net(1)}, num_classes=C)
    mine_sum, mine_count = [3.0, 0.0, 8.0, 2.0, 5.0], [1.0, 0.0, 2.0, 1.0, 2.0]
    _with_sums(m, mine_sum, mine_count)
    m.end_epoch(0, 1.0)
    assert calls == [2 * C]  # one reduction of sums and counts together
    per_class = (sum(mine_count) + other_count.sum().item()) / C  # the reference's N / C, over the reduced N
    kappa_bar = [(a + b) / per_class for a, b in zip(mine_sum, other_sum.tolist())]
    assert m.weights == pytest.approx(fair_weights(kappa_bar, 2.0, m.p.smoothing), rel=1e-12)
    assert m.kappa_mean == pytest.approx(kappa_bar)


# ============================================================================ ABSLD


TAU_ADV = [0.7, 1.5, 1.0, 2.5, 0.5]
TAU_NAT = [1.2, 0.8, 3.0, 1.0, 2.0]


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_absld_loss_by_hand(batch, mode):
    x, y = batch
    s, t = linear_net(0), linear_net(1)
    m = build("absld", {"teacher": t}, num_classes=C, init="zero", steps=1, temperature_mode=mode)
    m.tau_adv, m.tau_nat = list(TAU_ADV), list(TAU_NAT)
    ta, tn = torch.tensor(TAU_ADV)[y][:, None], torch.tensor(TAU_NAT)[y][:, None]  # indexed by the TRUE label
    if mode == "reference":
        ta = tn = ta * tn
    z = t(x)  # teacher on CLEAN x
    q_adv, q_nat = softmax(z / ta), softmax(z / tn)
    x_adv = m.perturb(s, x, y)
    assert torch.allclose(x_adv, pgd_step(s, x, x, lambda zs: kl_rows(q_adv, zs).sum()))
    loss, logs = m.loss(s, x, x_adv, y)

    def km(q, zs):
        return (q * (torch.log(q + 1e-5) - torch.log(softmax(zs)))).sum() / (6 * C)

    expected = 5 / 6 * km(q_adv, s(x_adv)) + 1 / 6 * km(q_nat, s(x))
    assert torch.allclose(loss, expected, atol=1e-7)
    if mode == "paper":  # the two label sets really differ in paper mode
        other = 5 / 6 * km(softmax(z / (ta * tn)), s(x_adv)) + 1 / 6 * km(softmax(z / (ta * tn)), s(x))
        assert not torch.allclose(loss, other, atol=1e-5)


def test_absld_risks_accumulate_and_temperatures_move_only_at_end_epoch():
    s, t = bn_net(0), linear_net(1)
    s.train()
    m = build("absld", {"teacher": t}, num_classes=C)
    m.start_epoch(0, 1.0)
    risk_adv = torch.zeros(C, dtype=torch.float64)
    risk_nat = torch.zeros(C, dtype=torch.float64)
    for seed in (10, 11):
        x, y = make_batch(seed, n=10)
        x_adv = m.perturb(s, x, y)
        before = copy.deepcopy(s.state_dict())
        m.loss(s, x, x_adv, y)
        probe = copy.deepcopy(s)
        probe.load_state_dict(before)  # replay the step's train-mode forwards in the same order
        la, ln = probe(x_adv), probe(x)
        risk_adv.index_add_(0, y, F.cross_entropy(la, y, reduction="none").double().detach())
        risk_nat.index_add_(0, y, F.cross_entropy(ln, y, reduction="none").double().detach())
        assert m.tau_adv == [1.0] * C and m.tau_nat == [1.0] * C
    state = m.state_dict()
    assert state["risk_adv"] == pytest.approx(risk_adv.tolist(), rel=1e-6)  # sums, from train-mode logits
    assert state["risk_nat"] == pytest.approx(risk_nat.tolist(), rel=1e-6)
    m.end_epoch(0, 1.0)
    for tau, risk in ((m.tau_adv, risk_adv), (m.tau_nat, risk_nat)):
        gap = risk - risk.mean()
        expected = (1.0 - 0.1 * gap / gap.abs().max()).clamp(0.5, 5)
        assert tau == pytest.approx(expected.tolist(), rel=1e-6)
    assert m.state_dict()["count"] == [0.0] * C  # sums reset for the next epoch


def _absld_with(risk_adv, risk_nat, count=None, **params):
    m = build("absld", {"teacher": linear_net(1)}, num_classes=C, **params)
    state = m.state_dict()
    state.update(risk_adv=list(map(float, risk_adv)), risk_nat=list(map(float, risk_nat)), count=list(map(float, count or [1] * C)))
    m.load_state_dict(state)
    return m


def test_absld_cools_hard_classes_heats_easy_ones_and_scales_eta():
    risk = [5.0, 1.0, 2.0, 2.0, 0.0]  # mean 2, gap [3, -1, 0, 0, -2], max |gap| 3
    m = _absld_with(risk, risk[::-1])
    m.end_epoch(0, 1.0)
    assert m.tau_adv == pytest.approx([0.9, 1 + 0.1 / 3, 1.0, 1.0, 1 + 0.2 / 3])
    assert m.tau_nat == pytest.approx([1 + 0.2 / 3, 1.0, 1.0, 1 + 0.1 / 3, 0.9])  # adv and nat separately
    assert m.tau_adv[0] < 1 < m.tau_adv[4]  # highest risk cooled, lowest heated
    decayed = _absld_with(risk, risk)
    decayed.end_epoch(214, 0.1)  # eta = 0.1 x the lr factor after the decay check
    assert decayed.tau_adv == pytest.approx([0.99, 1 + 0.01 / 3, 1.0, 1.0, 1 + 0.02 / 3])


def test_absld_clamps_and_guards_equal_risks():
    m = _absld_with([5.0, 0.0, 2.0, 2.0, 1.0], [1.0] * C)
    m.tau_adv = [0.55, 4.95, 1.0, 1.0, 1.0]
    m.tau_nat = [0.4, 1.0, 1.0, 1.0, 6.0]
    m.end_epoch(0, 1.0)
    assert m.tau_adv[0] == 0.5 and m.tau_adv[1] == 5.0
    assert m.tau_nat == [0.5, 1.0, 1.0, 1.0, 5.0]  # equal risks: no move (no 0/0), only the clamp


def test_absld_counted_class_stats_leave_unseen_classes_alone():
    m = _absld_with([3.0, 0.0, 1.0, 2.0, 0.0], [0.0] * C, count=[2, 0, 1, 1, 0], class_stats="counted")
    m.end_epoch(0, 1.0)
    # seen classes 0, 2, 3: mean 2, gap [1, -1, 0]
    assert m.tau_adv == pytest.approx([0.9, 1.0, 1.1, 1.0, 1.0])


def test_absld_reference_class_stats_include_absent_classes():
    """The default (resnet18_absld_cifar10.py, end of epoch): the mean runs over all C risk sums."""
    m = _absld_with([3.0, 0.0, 1.0, 2.0, 0.0], [0.0] * C, count=[2, 0, 1, 1, 0])
    m.end_epoch(0, 1.0)
    # all classes: mean 1.2, gap [1.8, -1.2, -0.2, 0.8, -1.2], max |gap| 1.8
    assert m.tau_adv == pytest.approx([0.9, 1 + 0.12 / 1.8, 1 + 0.02 / 1.8, 1 - 0.08 / 1.8, 1 + 0.12 / 1.8])


def test_absld_uses_the_all_reduced_risks(monkeypatch):
    import advkd.methods.absld as absld

    other = torch.tensor([[0.0, 4.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [1.0] * C], dtype=torch.float64)
    calls = []

    def fake_all_reduce(t):
        calls.append(tuple(t.shape))
        t.add_(other.to(t.device))
        return t

    monkeypatch.setattr(absld, "all_reduce_sum", fake_all_reduce)
    m = _absld_with([4.0, 0.0, 2.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0, 1.0])
    m.end_epoch(0, 1.0)
    assert len(calls) == 1
    # reduced adv risk [4, 4, 2, 2, 2]: mean 2.8, gap [1.2, 1.2, -.8, -.8, -.8]
    assert m.tau_adv == pytest.approx([0.9, 0.9, 1 + 0.08 / 1.2, 1 + 0.08 / 1.2, 1 + 0.08 / 1.2])
    # reduced nat risk [1, 0, 2, 2, 1]: mean 1.2, gap [-.2, -1.2, .8, .8, -.2]
    assert m.tau_nat == pytest.approx([1 + 0.02 / 1.2, 1.1, 1 - 0.08 / 1.2, 1 - 0.08 / 1.2, 1 + 0.02 / 1.2])


# ============================================================================ SCORE


@pytest.mark.parametrize("classes,value", [(10, 0.1), (100, 0.09 * 100 / 99)])
def test_score_clip_threshold(classes, value):
    m = build("score", num_classes=classes)
    assert m.c_clip == pytest.approx(value, rel=1e-12)
    onehot = torch.zeros(classes)
    onehot[0] = 1
    smoothed = torch.full((classes,), 0.3 / (classes - 1))
    smoothed[0] = 0.7
    assert m.c_clip == pytest.approx(((onehot - smoothed) ** 2).sum().item(), rel=1e-6)
    assert build("score", num_classes=10).c_clip == pytest.approx(0.1)


def test_score_perturb_and_loss_by_hand(batch):
    x, y = batch
    s = linear_net(0)
    m = build("score", num_classes=C, steps=1)
    assert (m.p.init, m.p.clamp_init, m.p.trades_lambda) == ("gaussian", True, 6.0)
    xs = x.clone()
    xs[0] = 0.0  # pixels at the border: the clamped start matters
    torch.manual_seed(7)
    x_adv = m.perturb(s, xs, y)
    torch.manual_seed(7)
    x0 = random_start(xs, eps=EPS, init="gaussian", init_std=0.001, clamp=True)
    assert x0.min() >= 0
    p_hat = softmax(s(xs)).detach()
    assert torch.allclose(x_adv, pgd_step(s, x0, xs, lambda z: ((softmax(z) - p_hat) ** 2).sum(1).mean()))
    x_adv = (x + 0.2 * torch.sign(torch.randn_like(x))).clamp(0, 1)  # a visible perturbation for the loss check
    loss, logs = m.loss(s, x, x_adv, y)
    p, pa = softmax(s(x)), softmax(s(x_adv))
    onehot = torch.eye(C)[y]
    c_clip = 0.09 * C / (C - 1)
    per = torch.clamp(((p - onehot) ** 2).sum(1) + 6.0 * ((pa - p) ** 2).sum(1) - c_clip, min=0)
    assert torch.allclose(loss, per.mean(), atol=1e-7)
    assert logs["loss_robust"] == pytest.approx(((pa - p) ** 2).sum(1).mean().item(), rel=1e-5)


def test_score_clipping_acts_on_the_whole_per_sample_loss(batch):
    x, y = batch
    s = linear_net(0)
    m = build("score", num_classes=C, clip_loss=1.0, trades_lambda=50.0)  # c_clip = 1.25 > every natural LSE here
    c_clip = 1.0 * C / (C - 1)
    x_adv = (x + 0.3).clamp(0, 1)
    p, pa = softmax(s(x)), softmax(s(x_adv))
    nat = ((p - torch.eye(C)[y]) ** 2).sum(1)
    rob = ((pa - p) ** 2).sum(1)
    assert (nat < c_clip).all() and ((nat + 50 * rob) > c_clip).any()
    loss, _ = m.loss(s, x, x_adv, y)
    whole = torch.clamp(nat + 50 * rob - c_clip, min=0).mean()
    natural_only = (torch.clamp(nat - c_clip, min=0) + 50 * rob).mean()
    assert torch.allclose(loss, whole, atol=1e-6)
    assert not torch.allclose(loss, natural_only, atol=1e-3)
    no_clip = build("score", num_classes=C, clip_loss=0.0, trades_lambda=50.0).loss(s, x, x_adv, y)[0]
    assert torch.allclose(no_clip, (nat + 50 * rob).mean(), atol=1e-6)


def test_score_gradient_flows_through_the_clean_side(batch):
    x, y = batch
    s = linear_net(0)
    m = build("score", num_classes=C, clip_loss=0.0)
    x_adv = (x + 0.1).clamp(0, 1)
    loss, _ = m.loss(s, x, x_adv, y)
    g_full = torch.autograd.grad(loss, s[1].weight)[0]
    onehot = torch.eye(C)[y]

    def grad_of(detach_clean):
        p, pa = softmax(s(x)), softmax(s(x_adv))
        target = p.detach() if detach_clean else p
        total = (((p - onehot) ** 2).sum(1) + 6 * ((pa - target) ** 2).sum(1)).mean()
        return torch.autograd.grad(total, s[1].weight)[0]

    g_expected, g_detached = grad_of(False), grad_of(True)
    assert torch.allclose(g_full, g_expected, atol=1e-7)
    assert not torch.allclose(g_full, g_detached, atol=1e-6)


# ============================================================================ BN modes, teachers


@pytest.mark.parametrize(
    "name,teacher,params,expected",
    [
        ("fair-ard", True, {}, 12),  # 10 train-mode attack forwards + S(x*) + clean S(x)
        ("fair-ard", True, {"bn_side_forward": False}, 11),
        ("fair-rslad", True, {}, 2),  # eval-mode attack; S(x*), S(x)
        ("absld", True, {}, 2),
        ("score", False, {}, 2),  # eval-mode attack; f(x*), f(x)
    ],
)
def test_batchnorm_updates_and_mode_restored(batch, name, teacher, params, expected):
    x, y = batch
    s = bn_net(0)
    s.train()
    m = build(name, {"teacher": bn_net(1)} if teacher else {}, num_classes=C, **params)
    x_adv = m.perturb(s, x, y)
    assert s.training
    m.loss(s, x, x_adv, y)
    assert int(s[1].num_batches_tracked) == expected


@pytest.mark.parametrize("name,teacher", [("fair-rslad", True), ("absld", True), ("score", False)])
def test_adversarial_forward_runs_before_the_clean_one(batch, name, teacher):
    x, y = batch
    s = bn_net(0)
    s.train()
    m = build(name, {"teacher": bn_net(1)} if teacher else {}, num_classes=C, steps=1)
    x_adv = m.perturb(s, x, y)
    start = copy.deepcopy(s)
    m.loss(s, x, x_adv, y)
    with torch.no_grad():
        adv_first, clean_first = copy.deepcopy(start), copy.deepcopy(start)
        adv_first(x_adv), adv_first(x)
        clean_first(x), clean_first(x_adv)
    assert torch.allclose(s[1].running_mean, adv_first[1].running_mean)
    assert not torch.allclose(s[1].running_mean, clean_first[1].running_mean)


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad", "absld"])
def test_teacher_frozen_and_called_once_per_batch(batch, name):
    x, y = batch
    s, t = bn_net(0), bn_net(1)
    t.train()
    calls = []
    t.register_forward_hook(lambda mod, inp, out: calls.append(inp[0]))
    m = build(name, {"teacher": t}, num_classes=C)
    assert not t.training
    x_adv = m.perturb(s, x, y)
    m.loss(s, x, x_adv, y)
    assert len(calls) == 1 and calls[0] is x  # on CLEAN x
    assert int(t[1].num_batches_tracked) == 0
    assert all(p.grad is None for p in s.parameters())


# ============================================================================ resume state


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad", "absld", "score"])
def test_state_round_trip_reproduces_losses(name):
    t = {"teacher": linear_net(1)} if name != "score" else {}
    s = linear_net(0)
    a = build(name, t, num_classes=C, steps=2)
    batches = [make_batch(20 + i, n=8) for i in range(5)]
    a.start_epoch(0, 1.0)
    for x, y in batches[:2]:
        a.loss(s, x, a.perturb(s, x, y), y)
    a.end_epoch(0, 0.5)
    a.start_epoch(1, 0.5)
    x, y = batches[2]
    a.loss(s, x, a.perturb(s, x, y), y)  # mid-epoch: running sums are part of the state
    saved = json.loads(json.dumps(a.state_dict()))
    b = build(name, t, num_classes=C, steps=2)
    b.load_state_dict(saved)
    assert b.state_dict() == a.state_dict()
    b.start_epoch(1, 0.5)
    for i, (x, y) in enumerate(batches[3:]):
        losses = []
        for m in (a, b):
            torch.manual_seed(100 + i)
            losses.append(m.loss(s, x, m.perturb(s, x, y), y)[0])
        assert torch.equal(losses[0], losses[1])
        if i == 0:
            a.end_epoch(1, 0.5)
            b.end_epoch(1, 0.5)
            assert a.state_dict() == b.state_dict()
            if name != "score":
                fresh = build(name, t, num_classes=C, steps=2)
                assert a.state_dict() != fresh.state_dict()


def test_resume_state_is_validated():
    from advkd.core.errors import AdvkdError

    m = build("fair-ard", {"teacher": linear_net(1)}, num_classes=C)
    with pytest.raises(AdvkdError, match="classes"):
        m.load_state_dict({"weights": [1.0] * 3, "kappa_mean": [None] * 3, "kappa_sum": [0.0] * 3, "count": [0.0] * 3})
    with pytest.raises(AdvkdError, match="keys"):
        build("absld", {"teacher": linear_net(1)}, num_classes=C).load_state_dict({"tau": [1.0] * C})


# ============================================================================ CLI end to end




@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["--runs-dir", str(root), "pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST]) == 0
    return root


@pytest.mark.parametrize("name", ["fair-ard", "fair-rslad", "absld"])
def test_cli_distill(runs, name):
    assert main(["--runs-dir", str(runs), "distill", "--method", name, "--student", "tinycnn", "--teacher", "tinycnn", *FAST]) == 0
    (metrics,) = runs.glob(f"distill/synthetic/tinycnn-{name}-tinycnn-steps2-b32-ev32-n64-s0/metrics.jsonl")
    row = json.loads(metrics.read_text().splitlines()[-1])
    key = "method_tau_adv" if name == "absld" else "method_class_weights"
    assert len(row[key]) == 10


def test_cli_score_pretrain_and_distill(runs):
    assert main(["--runs-dir", str(runs), "pretrain-teacher", "--arch", "tinycnn", "--method", "score", *FAST]) == 0
    assert list(runs.glob("pretrain-teacher/synthetic/tinycnn-score-steps2-b32-ev32-n64-s0/best.safetensors"))
    assert main(["--runs-dir", str(runs), "distill", "--method", "score", "--student", "tinycnn", *FAST]) == 0
    assert list(runs.glob("distill/synthetic/tinycnn-score*/best.safetensors"))
