"""DeepMind-style WideResNet (Gowal et al. 2020) with Swish, TF-"SAME" padding and internal
input normalisation.

Source: multi-teacher spec §11.5 ([ECCV ``mtard/cifar100_models/wideresnet.py``], [DM], [RB
``dm_wide_resnet.py``]). Used for B-MTARD's WRN-70-16 robust teacher (Gowal2020Uncovering) and
WRN-22-6 clean teacher. Layer names (``init_conv``, ``layer.N.block.M.batchnorm_0/conv_0/...``,
``shortcut``, ``batchnorm``, ``logits``) match the DeepMind/RobustBench checkpoints.

Normalisation statistics: the constructor takes ``mean``/``std`` and **defaults to CIFAR-10
stats**, as [ECCV]/[RSLAD] build both models (even for CIFAR-100). The official DeepMind /
RobustBench CIFAR-100 WRN-70-16 expects CIFAR-100 stats (spec §9): pass them explicitly
(``build_model(..., normalize="cifar100")`` does so). The stats are *non-persistent* buffers:
they follow ``.to()``/``.half()`` but are not in ``state_dict``, because the public checkpoints
have no ``mean``/``std`` keys (they were plain tensors in [ECCV]) and must load strictly.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS

# Same values as ``NORMALIZATIONS["cifar10"]`` (the test suite checks they agree).
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2471, 0.2435, 0.2616)


class Swish(nn.Module):
    """``x * sigmoid(x)`` (the [DM] custom autograd function computes the same gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class _Block(nn.Module):
    """BN-act on the input (also feeding the 1x1 shortcut when in != out), SAME-padded conv3x3,
    BN-act, conv3x3 (pad 1), add shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation_fn: type[nn.Module] = Swish) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"unsupported stride {stride}")
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = activation_fn()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = activation_fn()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut: nn.Conv2d | None = None
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        self._stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None:
            x = self.relu_0(self.batchnorm_0(x))
            v = x
        else:
            v = self.relu_0(self.batchnorm_0(x))
        # TensorFlow "SAME": symmetric for stride 1, right/bottom only for stride 2.
        v = F.pad(v, (1, 1, 1, 1) if self._stride == 1 else (0, 1, 0, 1))
        out = self.conv_0(v)
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return shortcut + out


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
                 activation_fn: type[nn.Module] = Swish) -> None:
        super().__init__()
        self.block = nn.Sequential(*[
            _Block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation_fn)
            for i in range(num_blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """DeepMind WideResNet: ``(x - mean) / std``, stem conv3x3 3->16, three groups of
    ``(depth - 4) / 6`` blocks (widths 16w/32w/64w, strides 1/2/2), BN-act, pool, ``logits``.

    Args:
        num_classes: output logits.
        depth: 6n + 4 (70 => 11 blocks per group, 22 => 3).
        width: widen factor.
        activation_fn: activation module class (Swish for the B-MTARD teachers).
        mean, std: per-channel input statistics; default CIFAR-10 (see module docstring).
        padding: extra zero padding of the input (0 for CIFAR).
    """

    def __init__(self, num_classes: int = 10, depth: int = 28, width: int = 10,
                 activation_fn: type[nn.Module] = Swish,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 padding: int = 0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.padding = padding
        ch = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(n, ch[0], ch[1], 1, activation_fn),
            _BlockGroup(n, ch[1], ch[2], 2, activation_fn),
            _BlockGroup(n, ch[2], ch[3], 2, activation_fn),
        )
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = activation_fn()
        self.logits = nn.Linear(ch[3], num_classes)
        self.num_channels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = self.layer(self.init_conv(out))
        out = self.relu(self.batchnorm(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.logits(out)


@MODELS.register("wrn70-16", help="DeepMind WRN-70-16, Swish, internal normalisation (Gowal2020; spec §11.5)",
                 aliases=("wrn-70-16", "dm-wrn70-16", "wideresnet70-16"), family="wrn", stand_in=False,
                 style="deepmind", internal_norm=True)
def wrn70_16(num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN,
             std: Sequence[float] = CIFAR10_STD) -> DMWideResNet:
    return DMWideResNet(num_classes, depth=70, width=16, activation_fn=Swish, mean=mean, std=std)


@MODELS.register("wrn22-6", help="DeepMind WRN-22-6, Swish, internal normalisation (clean teacher; spec §11.5)",
                 aliases=("wrn-22-6", "dm-wrn22-6", "wideresnet22-6"), family="wrn", stand_in=False,
                 style="deepmind", internal_norm=True)
def wrn22_6(num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN,
            std: Sequence[float] = CIFAR10_STD) -> DMWideResNet:
    return DMWideResNet(num_classes, depth=22, width=6, activation_fn=Swish, mean=mean, std=std)
