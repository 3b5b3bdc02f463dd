"""AutoAttack on the BN-folded copy decides like one plain library call on the unfolded model.

``advkd attack`` (``advkd.evaluation.evaluate``) runs every attack, AutoAttack included, on
``accel.eval_model(model, FastPaths())``: a traced copy with each conv->BN pair folded into the
convolution, whose no-grad forwards (Square, the prediction checks) go through a frozen
TorchScript copy on the CPU. Folding and freezing change float rounding only, so the robust flags must be those of
``pyautoattack.AutoAttack(...).run_standard_evaluation`` on the original model (the staged
wrapper alone is checked against the library on one model in tests/test_attacks_blackbox.py).

Tolerance on the adversarial examples (the same as ``benchmarks/autoattack_pair.py``'s): a point's
example equals the library's within ``XADV_ATOL`` per pixel (measured: <= 1e-7 here), *or* the two
trajectories went apart -- a gradient component within rounding of zero flips its sign and one
APGD step goes the other way -- and then both examples must still be adversarial on the unfolded
model and inside the eps-ball. Measured over 8 training seeds with sharpened logits: 0-1 of 24
points go apart, and the flags are equal every time.

The net is advkd's ``tinycnn`` (two conv->BN pairs) trained ~1 s on 10 separable classes of
(3, 8, 8) images. At eps = 8/255 APGD-CE alone breaks every point of the plain net; the fast test
multiplies its last layer by 20, so confident points get a cross-entropy gradient that underflows
to zero and survive APGD-CE, and the scale-free targeted DLR loss of APGD-T breaks them (the
gradient masking the ensemble exists for). FAB-T and Square then have nothing left to attack;
the ``slow`` test runs all four stages on points that survive every one.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkd.attacks import build, training_mode
from advkd.core import accel
from advkd.models import build_model

pyautoattack = pytest.importorskip("pyautoattack")

C, SHAPE = 10, (3, 8, 8)
N, BS = 24, 8  # 3 library batches: batch composition matters
XADV_ATOL = 1e-5
SHARPEN = 20.0  # last-layer scale of the fast test: CE gradients of confident points underflow


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """(tinycnn in eval mode, x_test, y_test): 300 SGD steps on 2000 points of 10 separable classes.

    Clean accuracy ~0.8 on the N test points (drawn after the training points)."""
    gen = torch.Generator().manual_seed(1)
    protos = torch.randn(C, *SHAPE, generator=gen)

    def make(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, C, (n,), generator=gen)
        return (0.5 + 0.04 * protos[y] + 0.08 * torch.randn(n, *SHAPE, generator=gen)).clamp(0, 1), y

    (xtr, ytr), (xte, yte) = make(2000), make(N)
    torch.manual_seed(0)
    model = build_model("tinycnn", num_classes=C)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(300):
        idx = torch.randint(0, len(xtr), (64,))
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval(), xte, yte


def sharpened(model: nn.Module, factor: float) -> nn.Module:
    """A copy with the logits multiplied by ``factor`` (same predictions, far larger margins)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.linear.weight.mul_(factor)
        out.linear.bias.mul_(factor)
    return out


def bn_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def library_call(model: nn.Module, x: Tensor, y: Tensor, eps: float, stages: list[str] | None = None) -> tuple[Tensor, Tensor]:
    """(x_adv, robust flags) of one plain ``run_standard_evaluation`` on ``model`` in eval mode
    (``stages``: ``attacks_to_run``, e.g. APGD-CE alone). Drops the parameter grads FAB leaves."""
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", device=x.device, seed=0)
    if stages is not None:
        adversary.attacks_to_run = stages
    with training_mode(model, train=False):
        x_lib, y_lib = adversary.run_standard_evaluation(x, y, batch_size=BS)
    for p in model.parameters():
        p.grad = None
    return x_lib, y_lib == y


def folded_aa(model: nn.Module, x: Tensor, y: Tensor, eps: float):
    """advkd's staged ``aa`` on the folded copy, as ``advkd attack`` runs it on the CPU (frozen no-grad
    forwards): (attack, x_adv, folded net)."""
    net = accel.eval_model(model, accel.FastPaths(fold_bn=True, freeze=True))
    attack = build("aa", eps=eps, batch_size=BS)
    return attack, attack(net, x, y), net


def assert_same_decisions(model: nn.Module, x: Tensor, y: Tensor, eps: float, attack, x_adv: Tensor, x_lib: Tensor,
                          flags_lib: Tensor) -> int:
    """Equal flags; each example equal within XADV_ATOL or adversarial on both sides. Returns the
    number of points whose examples went apart."""
    assert torch.equal(attack.stage_flags["square"], flags_lib)
    diff = (x_adv - x_lib).abs().flatten(1).amax(1)
    apart = diff > XADV_ATOL
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) == y, flags_lib)  # rescored on the unfolded model: no boundary flip
        assert bool((model(x_lib[apart]).argmax(1) != y[apart]).all())
        assert bool((model(x_adv[apart]).argmax(1) != y[apart]).all())
    assert int(apart.sum()) <= N // 4
    for xa in (x_adv, x_lib):
        assert (xa - x).abs().max().item() <= eps + 1e-6 and 0.0 <= xa.min().item() and xa.max().item() <= 1.0
    return int(apart.sum())


def test_folding_removes_both_bn_layers_and_keeps_the_function(trained):
    model, x, _ = trained
    net = accel.eval_model(model, accel.FastPaths(fold_bn=True))
    assert bn_count(model) == 2 and bn_count(net) == 0 and net is not model
    assert not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_aa_on_the_folded_copy_flags_like_a_library_call_on_the_unfolded_model(trained):
    base, x, y = trained
    model, eps = sharpened(base, SHARPEN), 8 / 255
    attack, x_adv, net = folded_aa(model, x, y, eps)
    assert bn_count(net) == 0 and net.frozen_keys  # the library's no-grad forwards went through the frozen copy
    flags = attack.stage_flags
    assert int(flags["clean"].sum()) >= 16
    assert int(flags["apgd-ce"].sum()) >= 4  # not trivial: APGD-CE leaves points for APGD-T
    assert list(flags) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    # APGD-CE alone in the library, on the unfolded model: the same survivors
    _, ce_lib = library_call(model, x, y, eps, stages=["apgd-ce"])
    assert torch.equal(flags["apgd-ce"], ce_lib)
    x_lib, flags_lib = library_call(model, x, y, eps)
    assert_same_decisions(model, x, y, eps, attack, x_adv, x_lib, flags_lib)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow  # FAB-T (9 x 100 iterations) and Square (5000 queries) on survivors, twice: ~30 s
def test_every_stage_on_the_folded_copy_flags_like_the_library(trained):
    model, x, y = trained
    eps = 4 / 255
    attack, x_adv, net = folded_aa(model, x, y, eps)
    assert net.frozen_keys  # Square's 5000 queries ran on the frozen copy
    assert int(attack.stage_flags["square"].sum()) >= 2  # points survive all four stages
    x_lib, flags_lib = library_call(model, x, y, eps)
    assert_same_decisions(model, x, y, eps, attack, x_adv, x_lib, flags_lib)


def test_aa_on_a_channels_last_copy_flags_like_the_library(trained):
    """The CPU default on AVX-512 machines: the folded copy in channels-last, fed channels-last
    inputs as ``advkd attack`` does. The library views gradients as (n, -1), which channels-last
    strides refuse: advkd hands it NCHW at the boundary (accel.NCHWBoundary) and keeps the layout inside."""
    base, x, y = trained
    model, eps = sharpened(base, SHARPEN), 8 / 255
    paths = accel.FastPaths(fold_bn=True, freeze=True, channels_last=True)
    net = accel.eval_model(model, paths)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x_cl = accel.to_memory_format(x, paths)
    assert accel.is_channels_last(x_cl)
    attack = build("aa", eps=eps, batch_size=BS)
    x_adv = attack(net, x_cl, y)
    x_lib, flags_lib = library_call(model, x, y, eps)
    assert_same_decisions(model, x, y, eps, attack, x_adv, x_lib, flags_lib)


def test_the_nchw_boundary_gives_contiguous_input_gradients_equal_to_the_plain_ones(trained):
    model, x, y = trained
    inner = copy.deepcopy(model).to(memory_format=torch.channels_last)
    wrapped = accel.NCHWBoundary(inner)
    xr, xw = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g_plain, = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    g_wrapped, = torch.autograd.grad(F.cross_entropy(wrapped(xw), y), xw)
    assert g_wrapped.is_contiguous() and g_wrapped.view(len(x), -1).shape == (len(x), 3 * 8 * 8)
    torch.testing.assert_close(g_wrapped, g_plain, rtol=1e-4, atol=1e-6)
