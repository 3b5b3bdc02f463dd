"""Three-stage CIFAR ResNet family (He et al. 2016 §4.2): ResNet-8/14/20/32/44/56/110.

Source: multi-teacher spec §11.3 (ResNet-56 is B-MTARD's clean CIFAR-10 teacher). Two incompatible
shortcut variants exist and the authors' checkpoint variant is UNCONFIRMED, so both are registered:

- option B (``resnetN``): chenyaofo style as shipped in [ECCV ``cifar10_nat_teacher_models/resnet.py``].
  Downsampling shortcut ``downsample`` = conv1x1(stride)+BN, ``AdaptiveAvgPool2d(1)``, head ``fc``,
  Kaiming-normal fan-out init for convs, BN weight 1 / bias 0.
- option A (``resnetN-a``): akamaster style as in [FAIR ``models/resnet_56.py``]. Parameter-free
  shortcut (spatial subsample by 2, zero-pad ``planes // 4`` channels each side), head ``linear``,
  Kaiming-normal (fan-in) init of conv and linear weights.

Depth = 6n + 2 (n blocks per stage, widths 16/32/64, strides 1/2/2). Layer names follow the
respective repos so their checkpoints load strictly; detect the variant from state-dict keys
(``downsample``/``fc`` => B, ``linear`` => A).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS

DEPTHS: tuple[int, ...] = (8, 14, 20, 32, 44, 56, 110)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


# --------------------------------------------------------------------------------------------
# Option B (chenyaofo / [ECCV])
# --------------------------------------------------------------------------------------------
class BasicBlockB(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + (identity | ``downsample`` = conv1x1+BN), then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """Option-B CIFAR ResNet (chenyaofo ``CifarResNet``)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(16, n)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlockB(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlockB(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


# --------------------------------------------------------------------------------------------
# Option A (akamaster / [FAIR])
# --------------------------------------------------------------------------------------------
class ShortcutA(nn.Module):
    """Parameter-free shortcut: take every second pixel, zero-pad ``pad`` channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + (identity | option-A shortcut), then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetA(nn.Module):
    """Option-A CIFAR ResNet (akamaster ``ResNet``)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlockA(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------------------------
# Registration: one entry per depth and shortcut option.
# --------------------------------------------------------------------------------------------
def _register(depth: int) -> None:
    def build_b(num_classes: int = 10) -> CifarResNet:
        return CifarResNet(depth, num_classes)

    def build_a(num_classes: int = 10) -> CifarResNetA:
        return CifarResNetA(depth, num_classes)

    build_b.__name__ = build_b.__qualname__ = f"resnet{depth}"
    build_a.__name__ = build_a.__qualname__ = f"resnet{depth}_a"
    MODELS.add(f"resnet{depth}", build_b,
               help=f"ResNet-{depth}, 3-stage CIFAR, option-B conv1x1+BN shortcut ([ECCV]; spec §11.3)",
               aliases=(f"rn{depth}", f"resnet-{depth}", f"resnet{depth}-b", f"rn{depth}-b"),
               family="resnet-cifar", stand_in=False, shortcut="B")
    MODELS.add(f"resnet{depth}-a", build_a,
               help=f"ResNet-{depth}, 3-stage CIFAR, option-A zero-pad shortcut (akamaster/[FAIR]; spec §11.3)",
               aliases=(f"rn{depth}-a", f"resnet-{depth}-a"),
               family="resnet-cifar", stand_in=False, shortcut="A")


for _depth in DEPTHS:
    _register(_depth)
del _depth
