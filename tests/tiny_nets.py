"""Tiny seeded models and data shared by several test files (a plain module, not a test file).

Importable as ``from tiny_nets import ...``: pytest's default (prepend) import mode puts tests/
on sys.path. Every helper seeds its own random draws, so its output is the same in every file
that uses it; tests compare exact values against it, so keep the seeds and the order of draws.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- method tests: (3, 4, 4) inputs

C = 5  # classes of linear_net / bn_net / make_batch


def linear_net(seed: int, scale: float = 1.0) -> nn.Module:
    """A linear model on (3, 4, 4) inputs, weights drawn under ``torch.manual_seed(seed)``.

    ``scale`` multiplies weight and bias (sharper or softer outputs, for a confident or a soft
    teacher); the default 1.0 leaves the seeded initialisation untouched.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, C))
    if scale != 1.0:
        with torch.no_grad():
            net[1].weight.mul_(scale)
            net[1].bias.mul_(scale)
    return net


def bn_net(seed: int) -> nn.Module:
    """A conv net with a BatchNorm on (3, 4, 4) inputs, for tests of train/eval modes and BN statistics."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, C))


def make_batch(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from a generator seeded with ``seed``: x uniform (n, 3, 4, 4), then y in [0, C)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    return x, y


# ----------------------------------------------------------------------------- attack tests: (3, 8, 8) inputs

CLASSIFIER_C, CLASSIFIER_SHAPE = 10, (3, 8, 8)  # classes and image shape of tiny_net / trained_classifier


def tiny_net() -> nn.Sequential:
    """The attack tests' MLP with a BatchNorm on (3, 8, 8) images; initialised from the global torch seed."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, CLASSIFIER_C))


def trained_classifier(n_test: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode, x_test, y_test): a tiny_net trained ~1 s on CPU on 10 separable classes.

    Clean accuracy is ~1.0 and an eps = 8/255 Linf attack breaks it, so attack tests can check
    both. Parameter grads are cleared (None). The 4000 training points are drawn before the
    ``n_test`` test points, so the model does not depend on ``n_test``.
    """
    gen = torch.Generator().manual_seed(1)
    protos = torch.randn(CLASSIFIER_C, *CLASSIFIER_SHAPE, generator=gen)

    def make(n: int):
        y = torch.randint(0, CLASSIFIER_C, (n,), generator=gen)
        x = (0.5 + 0.04 * protos[y] + 0.08 * torch.randn(n, *CLASSIFIER_SHAPE, generator=gen)).clamp(0, 1)
        return x, y

    xtr, ytr = make(4000)
    xte, yte = make(n_test)
    torch.manual_seed(0)
    model = tiny_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 100):
            idx = perm[i : i + 100]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    return model, xte, yte


def with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with non-trivial BN running statistics and affine parameters, so
    folding BN into the convolutions has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()
