"""Zagoruyko-Komodakis pre-activation WideResNet (TRADES / RobustBench layout).

Source: single-teacher spec §4 (WRN-34-10, WRN-34-20; [AdaAD: networks/wideresnet.py]) and
multi-teacher spec §11.4 ([TRADES], [EXT/ECCV ``cifar10_models/wideresnet.py``]). These are the
robust teachers (TRADES WRN-34-10, LTD WRN-34-20/34-10). Layer names (``conv1``, ``block1``,
``sub_block1``, ``layer.N.bn1``, ``convShortcut``, ``bn1``, ``fc``) match the public checkpoints.

``sub_block1`` is an unused duplicate of the first group that exists only so checkpoints saved
with it (TRADES ``model_cifar_wrn.pt``, LTD CIFAR-100 WRN-34-10) load strictly. It is never used
in ``forward``. The head uses adaptive average pooling (== ``avg_pool2d(8)`` at 32x32).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS


class BasicBlock(nn.Module):
    """Pre-activation block; when in != out, the BN-ReLU'd input feeds both conv and 1x1 shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Conv2d | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.convShortcut is not None:
            x = F.relu(self.bn1(x))
            out = x
        else:
            out = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(out)))
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(x)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` blocks; only the first one changes width/stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(nb_layers)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen: stem conv3x3 3->16, three groups (strides 1/2/2), BN-ReLU, pool, FC.

    Args:
        depth: 6n + 4 (34 => 5 blocks per group).
        num_classes: output logits.
        widen_factor: widths are [16, 16k, 32k, 64k].
        sub_block1: also build the unused duplicate first group (checkpoint compatibility only).
    """

    def __init__(self, depth: int = 34, num_classes: int = 10, widen_factor: int = 10,
                 sub_block1: bool = False) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.sub_block1: NetworkBlock | None = NetworkBlock(n, ch[0], ch[1], 1) if sub_block1 else None
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))  # sub_block1 is deliberately unused
        out = F.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@MODELS.register("wrn34-10", help="WideResNet-34-10, Zagoruyko pre-act (TRADES/LTD teacher; spec §4, §11.4)",
                 aliases=("wrn-34-10", "wideresnet34-10", "wideresnet-34-10"), family="wrn", stand_in=False,
                 style="zagoruyko")
def wrn34_10(num_classes: int = 10, sub_block1: bool = False) -> WideResNet:
    return WideResNet(34, num_classes, 10, sub_block1=sub_block1)


@MODELS.register("wrn34-20", help="WideResNet-34-20, Zagoruyko pre-act (LTD CIFAR-10 teacher; spec §4.1)",
                 aliases=("wrn-34-20", "wideresnet34-20", "wideresnet-34-20"), family="wrn", stand_in=False,
                 style="zagoruyko")
def wrn34_20(num_classes: int = 10, sub_block1: bool = False) -> WideResNet:
    return WideResNet(34, num_classes, 20, sub_block1=sub_block1)


@MODELS.register("wrn28-10", help="WideResNet-28-10, Zagoruyko pre-act (same block as WRN-34-10)",
                 aliases=("wrn-28-10", "wideresnet28-10", "wideresnet-28-10"), family="wrn", stand_in=False,
                 style="zagoruyko")
def wrn28_10(num_classes: int = 10, sub_block1: bool = False) -> WideResNet:
    return WideResNet(28, num_classes, 10, sub_block1=sub_block1)
