"""Tests of the attack engine and the named attacks, on a tiny undefended model (tests/tiny_nets.py).

The model is an MLP with a BatchNorm on 3x8x8 images of 10 separable classes (clean accuracy
~100% after ~1 s of CPU training) that an eps = 8/255 Linf attack breaks.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkd.attacks import (
    ATTACKS,
    build,
    cw_margin,
    list_attacks,
    margin,
    projected_gradient,
    random_start,
    training_mode,
)
from advkd.core.errors import AdvkdError

from tiny_nets import CLASSIFIER_C, CLASSIFIER_SHAPE, tiny_net, trained_classifier

EPS = 8 / 255
C, SHAPE = CLASSIFIER_C, CLASSIFIER_SHAPE  # 10 classes of (3, 8, 8) images
LINF_ATTACKS = [n for n in list_attacks() if ATTACKS.get(n).threat_model == "Linf"]
# settings that keep the registry-wide tests fast (the expensive defaults are tested elsewhere)
CHEAP = {"cw2": {"steps": 20}, "spsa": {"iterations": 3, "samples_schedule": "20@0"}}


@pytest.fixture(scope="module")
def data_model():
    """(model in eval mode, x_test, y_test): clean accuracy ~1.0, no parameter grads."""
    model, xte, yte = trained_classifier(n_test=300)
    for p in model.parameters():
        assert p.grad is None
    return model, xte, yte


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), training_mode(model, train=False):
        return (model(x).argmax(1) == y).float().mean().item()


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _no_grads(model: nn.Module) -> bool:
    return all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------ the fixture


def test_tiny_model_is_accurate(data_model):
    model, x, y = data_model
    assert accuracy(model, x, y) >= 0.95


# ------------------------------------------------------------------------------ bounds


@pytest.mark.parametrize("name", LINF_ATTACKS)
def test_linf_attacks_stay_in_ball_and_range(data_model, name):
    model, x, y = data_model
    torch.manual_seed(0)
    x_in = x.clone()
    x_adv = build(name, **CHEAP.get(name, {}))(model, x, y)
    assert torch.equal(x, x_in)  # input not mutated
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


@pytest.mark.parametrize(
    "params",
    [dict(init="gaussian", clamp_init=False), dict(init="zero"), dict(loss="cw"), dict(steps=0)],
)
def test_pgd_variants_stay_in_ball(data_model, params):
    model, x, y = data_model
    x_adv = build("pgd", eps="8/255", **params)(model, x, y)
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def test_fgsm_gaussian_init_stays_in_ball(data_model):
    model, x, y = data_model
    x_adv = build("fgsm", init="gaussian")(model, x, y)
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


@pytest.mark.parametrize("init", ["uniform", "gaussian", "zero"])
def test_l2_pgd_stays_in_ball(data_model, init):
    model, x, y = data_model
    torch.manual_seed(0)
    attack = build("pgd", eps=0.5, norm="L2", step_size=0.2, steps=10, init=init)
    assert attack.threat_model == "L2"
    x_adv = attack(model, x, y)
    dist = (x_adv - x).flatten(1).norm(dim=1)
    assert dist.max().item() <= 0.5 + 1e-5
    assert dist.median().item() > 0.4  # it does use the budget
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_random_start_inits():
    torch.manual_seed(0)
    x = torch.rand(64, *SHAPE)
    x[:, 0] = 0.0  # boundary pixels: unclamped starts must be able to leave [0, 1]
    x_in = x.clone()
    eps = 0.1

    u = random_start(x, eps=eps, init="uniform", clamp=False)
    assert (u - x).abs().max().item() <= eps + 1e-7
    assert (u - x).abs().max().item() > 0.9 * eps
    assert u.min().item() < 0.0  # not clamped
    uc = random_start(x, eps=eps, init="uniform", clamp=True)
    assert uc.min().item() >= 0.0 and uc.max().item() <= 1.0
    assert (uc - x).abs().max().item() <= eps + 1e-7

    l2 = random_start(x, eps=eps, init="uniform", norm="L2", clamp=False)
    norms = (l2 - x).flatten(1).norm(dim=1)
    assert norms.max().item() <= eps + 1e-6
    assert norms.min().item() > 0.9 * eps  # uniform in a 192-d ball: mass near the sphere

    g = random_start(x, eps=eps, init="gaussian", init_std=0.001, clamp=False)
    assert abs((g - x).std().item() - 0.001) < 1e-4
    assert g.min().item() < 0.0
    gc = random_start(x, eps=eps, init="gaussian", init_std=0.001, clamp=True)
    assert gc.min().item() >= 0.0

    z = random_start(x, eps=eps, init="zero")
    assert torch.equal(z, x) and z.data_ptr() != x.data_ptr()

    assert torch.equal(x, x_in)
    with pytest.raises(AdvkdError, match="uniform, gaussian, zero"):
        random_start(x, eps=eps, init="normal")
    with pytest.raises(AdvkdError, match="Linf, L2"):
        random_start(x, eps=eps, init="uniform", norm="L1")


# ------------------------------------------------------------------------------ strength


def test_pgd_at_least_as_strong_as_fgsm_and_both_break_the_model(data_model):
    model, x, y = data_model
    torch.manual_seed(0)
    clean = accuracy(model, x, y)
    acc_fgsm = accuracy(model, build("fgsm")(model, x, y), y)
    acc_pgd = accuracy(model, build("pgd10")(model, x, y), y)
    assert acc_pgd <= acc_fgsm
    assert acc_fgsm < clean - 0.3
    assert acc_pgd < clean - 0.5


@pytest.mark.parametrize("name", ["pgd20-sat", "pgd20-trades", "cwinf"])
def test_other_linf_attacks_break_the_model(data_model, name):
    model, x, y = data_model
    torch.manual_seed(0)
    assert accuracy(model, build(name)(model, x, y), y) < accuracy(model, x, y) - 0.5


def test_cw2_breaks_the_model_with_small_perturbations(data_model):
    model, x, y = data_model
    x_adv = build("cw2")(model, x, y)
    assert accuracy(model, x_adv, y) < 0.1
    dist = (x_adv - x).flatten(1).norm(dim=1)
    flipped = dist > 0
    # smaller than the L2 size of an 8/255 Linf-PGD perturbation (~ 8/255 * sqrt(192) = 0.43)
    assert dist[flipped].median().item() < 0.35
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def test_cw2_returns_clean_image_where_it_fails(data_model):
    model, x, y = data_model
    attack = build("cw2", steps=4, abort_early=False)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        logits = model(x_adv)
    shifted = logits + 0.01 * F.one_hot(y, C)
    success = shifted.argmax(1) != y
    assert 0 < success.sum() < len(y)  # a short run flips some but not all
    assert torch.equal(x_adv[~success], x[~success])  # failures: the exact clean image
    assert (x_adv[success] != x[success]).flatten(1).any(1).all()


def test_cw2_abort_early_checks_every_tenth_iteration():
    """A model whose output ignores the input: the loss is constant, so the run stops at the
    second check (iteration steps//10), after steps//10 + 1 forwards; and nothing is flipped."""
    calls = []

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.arange(C, dtype=torch.float32))

        def forward(self, z):
            calls.append(1)
            return self.bias.expand(z.shape[0], C) + 0.0 * z.flatten(1).sum(1, keepdim=True)

    x = torch.rand(4, *SHAPE)
    y = torch.full((4,), C - 1)  # the constant prediction: never flipped
    x_adv = build("cw2", steps=100)(Constant(), x, y)
    assert len(calls) == 100 // 10 + 1
    assert torch.equal(x_adv, x)
    calls.clear()
    build("cw2", steps=100, abort_early=False)(Constant(), x, y)
    assert len(calls) == 100


def test_cw2_binary_search_runs(data_model):
    model, x, y = data_model
    x_adv = build("cw2", steps=50, binary_search_steps=3)(model, x[:32], y[:32])
    assert x_adv.shape == x[:32].shape
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


# ------------------------------------------------------------------------------ modes and grads


def _mixed_mode_model(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    m.train()
    m[2].eval()  # the BatchNorm frozen while the rest trains
    return m


@pytest.mark.parametrize("name", list_attacks())
def test_attack_restores_mixed_modes_and_runs_in_eval(data_model, name):
    model, x, y = data_model
    m = _mixed_mode_model(model)
    m[2].train()  # now: whole model in train mode, so a train-mode attack would move BN stats
    m[1].eval()  # ... except one Linear, to keep the modes mixed
    before = _modes(m)
    stats = (m[2].running_mean.clone(), m[2].running_var.clone(), m[2].num_batches_tracked.clone())
    seen = []
    m.register_forward_pre_hook(lambda mod, inp: seen.append(mod[2].training))
    build(name, **CHEAP.get(name, {}))(m, x[:64], y[:64])
    assert _modes(m) == before
    assert seen and not any(seen)  # every forward of the attack ran in eval mode
    assert torch.equal(m[2].running_mean, stats[0])
    assert torch.equal(m[2].running_var, stats[1])
    assert torch.equal(m[2].num_batches_tracked, stats[2])
    assert _no_grads(m)


@pytest.mark.parametrize("name", list_attacks())
def test_attack_restores_modes_when_the_model_raises(data_model, name):
    model, x, y = data_model
    m = _mixed_mode_model(model)
    before = _modes(m)
    count = [0]

    def boom(mod, inp):
        count[0] += 1
        if count[0] == 2:
            raise RuntimeError("boom")

    m.register_forward_pre_hook(boom)
    params = {"cw2": {"abort_early": False}, "jsma": {"mode": "untargeted"}}.get(name, CHEAP.get(name, {}))
    if name == "fgsm":  # one forward only: fail at the first
        count[0] = 1
    with pytest.raises(RuntimeError, match="boom"):
        build(name, **params)(m, x[:8], y[:8])
    assert _modes(m) == before


def test_training_mode_restores_on_exception():
    m = tiny_net()
    m.train()
    m[2].eval()
    before = _modes(m)
    with pytest.raises(ValueError):
        with training_mode(m, None, train=False):
            assert not any(_modes(m))
            raise ValueError
    assert _modes(m) == before
    with training_mode(m, train=True):
        assert all(_modes(m))
    assert _modes(m) == before


@pytest.mark.parametrize("name", list_attacks())
def test_attacks_accumulate_no_parameter_gradients(data_model, name):
    model, x, y = data_model
    with torch.no_grad():  # also works when called from a no_grad evaluation loop
        build(name, **CHEAP.get(name, {}))(model, x[:32], y[:32])
    assert _no_grads(model)


def test_projected_gradient_keeps_modes_and_grads(data_model):
    """The engine itself changes no mode: a train-mode caller (ARD) gets train-mode forwards."""
    model, x, y = data_model
    m = copy.deepcopy(model)
    m.train()
    stats = m[2].running_mean.clone()
    x_adv = projected_gradient(lambda z: F.cross_entropy(m(z), y), x, eps=EPS, step_size=2 / 255, steps=3)
    assert all(_modes(m))
    assert not torch.equal(m[2].running_mean, stats)  # BN updated: train-mode forwards
    assert _no_grads(m)
    assert not x_adv.requires_grad


# ------------------------------------------------------------------------------ engine details


def test_projected_gradient_calls_loss_once_per_step(data_model):
    model, x, y = data_model
    iterates = []

    def loss_fn(z):
        iterates.append(z.detach().clone())
        return F.cross_entropy(model(z), y)

    x_in = x.clone()
    start = random_start(x, eps=EPS, init="gaussian", clamp=False)
    out = projected_gradient(loss_fn, x, eps=EPS, step_size=2 / 255, steps=7, x_init=start)
    assert len(iterates) == 7
    assert torch.equal(iterates[0], start)  # x_init used as is for the first forward
    assert torch.equal(x, x_in)
    assert (out - x).abs().max().item() <= EPS + 1e-6


def test_projected_gradient_zero_steps_returns_start(data_model):
    model, x, y = data_model
    calls = []

    def loss_fn(z):
        calls.append(1)
        return F.cross_entropy(model(z), y)

    out = projected_gradient(loss_fn, x, eps=EPS, step_size=1.0, steps=0, init="zero")
    assert torch.equal(out, x) and not calls
    far = x + 0.5  # projected onto the ball, then clipped
    out = projected_gradient(loss_fn, x, eps=EPS, step_size=1.0, steps=0, x_init=far)
    assert torch.equal(out, (x + EPS).clamp(0, 1)) or torch.allclose(out, (x + EPS).clamp(0, 1), atol=1e-7)
    assert not calls


def test_single_sign_step_matches_closed_form():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    x = torch.rand(5, 6)
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        p = torch.softmax(lin(x), dim=1)
        # d/dx mean CE = W^T (softmax - onehot) / B: only the sign matters
        g = (p - F.one_hot(y, 3).float()) @ lin.weight
    eps, alpha = 0.05, 0.1
    out = projected_gradient(lambda z: F.cross_entropy(lin(z), y), x, eps=eps, step_size=alpha, steps=1, init="zero")
    assert torch.allclose(out, (x + eps * g.sign()).clamp(0, 1), atol=1e-7)
    small = projected_gradient(lambda z: F.cross_entropy(lin(z), y), x, eps=eps, step_size=0.01, steps=1, init="zero")
    assert torch.allclose(small, (x + 0.01 * g.sign()).clamp(0, 1), atol=1e-7)
    # L2: a normalised step of length 0.01 inside the ball
    x_mid = torch.full((5, 6), 0.5)
    with torch.no_grad():
        p = torch.softmax(lin(x_mid), dim=1)
        g = (p - F.one_hot(y, 3).float()) @ lin.weight
    l2 = projected_gradient(
        lambda z: F.cross_entropy(lin(z), y), x_mid, eps=eps, step_size=0.01, steps=1, init="zero", norm="L2"
    )
    assert torch.allclose(l2, x_mid + 0.01 * g / g.norm(dim=1, keepdim=True), atol=1e-7)


def test_losses_use_the_logits_class_count():
    torch.manual_seed(0)
    logits = torch.randn(7, 100)
    y = torch.randint(0, 100, (7,))
    other = logits.clone()
    other[torch.arange(7), y] = -float("inf")
    expected_margin = logits[torch.arange(7), y] - other.max(1).values
    assert torch.allclose(margin(logits, y), expected_margin)
    per = cw_margin(logits, y, kappa=50.0, reduction="none")
    assert torch.allclose(per, -torch.relu(expected_margin + 50.0))
    assert torch.allclose(cw_margin(logits, y, kappa=50.0), per.sum())
    assert torch.allclose(cw_margin(logits, y, kappa=50.0, num_classes=100, reduction="mean"), per.mean())
    with pytest.raises(ValueError):
        cw_margin(logits, y, kappa=50.0, num_classes=10)


# ------------------------------------------------------------------------------ build / registry


def test_build_rejects_unknown_ids_and_params():
    with pytest.raises(AdvkdError, match="valid: .*pgd10"):
        build("pgd11")
    with pytest.raises(AdvkdError, match="valid: steps, step_size"):
        build("pgd", stepz=3)
    with pytest.raises(AdvkdError, match="no parameter steps"):
        build("pgd10", steps=20)
    with pytest.raises(AdvkdError, match="integer"):
        build("pgd", steps="ten")
    with pytest.raises(AdvkdError, match="integer"):
        build("pgd", steps=2.5)
    with pytest.raises(AdvkdError, match="Linf, L2"):
        build("pgd", norm="L3")
    with pytest.raises(AdvkdError, match="true or false"):
        build("cw2", abort_early="maybe")
    with pytest.raises(AdvkdError, match=">= 0"):
        build("pgd", steps=-1)
    with pytest.raises(AdvkdError, match="only applies with loss=cw"):
        build("pgd", kappa=10)
    with pytest.raises(AdvkdError, match="takes no eps"):
        build("cw2", eps="8/255")
    with pytest.raises(AdvkdError):
        build("pgd10", eps="eight")


def test_build_parses_eps_and_params_exactly():
    a = build("pgd10", eps="8/255")
    assert a.eps.text == "8/255" and a.eps.value == 8 / 255
    assert a.params["step_size"] == (8 / 255) / 4
    assert build("pgd10").eps.value == 8 / 255  # the default
    assert build("cwinf", step_size="2/255").params["step_size"] == 2 / 255
    assert build("cwinf").params["step_size"] == 0.031 / 4
    assert build("pgd20-trades").params == {
        "steps": 20, "step_size": 0.003, "norm": "Linf", "init": "uniform", "clamp_init": True, "loss": "ce"
    }
    assert build("pgd", norm="linf", steps="5").params["norm"] == "Linf"
    assert type(build("CW-L2")).__name__ == "CW2"  # aliases, case-insensitive
    cw = build("cw2")
    assert cw.eps is None and cw.threat_model == "unbounded-L2"
    assert cw.params == {"c": 0.1, "kappa": 0.01, "steps": 1000, "lr": 0.01, "binary_search_steps": 1, "abort_early": True}


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_is_documented_and_serialisable(name):
    cls = ATTACKS.get(name)
    doc = cls.__doc__ or ""
    assert "Norm" in doc and "[0, 1]" in doc and "Default" in doc
    assert ATTACKS.entry(name).help
    record = build(name).to_dict()
    assert json.loads(json.dumps(record)) == record
    assert record["attack"] == name


def test_list_attacks():
    names = list_attacks()
    for n in ["fgsm", "pgd", "pgd10", "pgd20-sat", "pgd20-trades", "cwinf", "cw2"]:
        assert n in names
    assert list_attacks("pgd20*") == ["pgd20-sat", "pgd20-trades"]


# ------------------------------------------------------------------------------ torchattacks parity


def test_agrees_with_torchattacks(data_model):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = data_model
    ta_pgd = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)
    ours_pgd = build("pgd", eps="8/255", step_size="2/255", steps=10, init="zero")
    a, b = ta_pgd(x, y), ours_pgd(model, x, y)
    assert torch.equal(a, b)
    ta_fgsm = torchattacks.FGSM(model, eps=8 / 255)
    a, b = ta_fgsm(x, y), build("fgsm", eps="8/255")(model, x, y)
    assert torch.equal(a, b)
    assert _no_grads(model)


def test_random_start_pgd_and_cwinf_agree_with_torchattacks_within_half_a_point(data_model, monkeypatch):
    """Accuracy under our pgd20-sat and cwinf vs torchattacks' PGD loop on the same model and data.

    torchattacks has no CW-Linf; its PGD loop is run with an independently written CW margin loss
    (kappa 50) swapped in for its cross-entropy, with cwinf's step and budget.
    """
    torchattacks = pytest.importorskip("torchattacks")
    import torchattacks.attacks.pgd as ta_pgd_module

    model, x, y = data_model

    def accuracy(x_adv):
        with torch.no_grad():
            return 100.0 * (model(x_adv).argmax(1) == y).float().mean().item()

    torch.manual_seed(0)
    ta = accuracy(torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=20, random_start=True)(x, y))
    torch.manual_seed(0)
    ours = accuracy(build("pgd20-sat")(model, x, y))
    assert abs(ta - ours) <= 0.5

    class CWMargin(nn.Module):
        def forward(self, logits, labels):
            onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
            correct = logits[onehot]
            wrong = logits.masked_fill(onehot, float("-inf")).max(1).values
            return -(correct - wrong + 50.0).clamp(min=0).sum()

    class NN:
        CrossEntropyLoss = CWMargin

    monkeypatch.setattr(ta_pgd_module, "nn", NN)
    torch.manual_seed(1)
    ta = accuracy(torchattacks.PGD(model, eps=8 / 255, alpha=0.031 / 4, steps=30, random_start=True)(x, y))
    torch.manual_seed(1)
    ours = accuracy(build("cwinf")(model, x, y))
    assert abs(ta - ours) <= 0.5
