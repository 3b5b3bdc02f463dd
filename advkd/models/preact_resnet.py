"""Pre-activation ResNet-18/34 (He et al. 2016 identity mappings), Tiny-ImageNet variant.

Source: multi-teacher spec §11.6, following [SCORE ``core/models/ti_preact_resnet.py``]: stem
conv3x3 without BN, PreActBlocks whose conv1x1 shortcut takes the *activated* input, and a final
BN-ReLU before ``AdaptiveAvgPool2d(1)``. Used as B-MTARD's Tiny-ImageNet students/teachers; the
adaptive pool makes it work at 32x32 and 64x64. Layer names match that file (``bn``, ``linear``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS


class PreActBlock(nn.Module):
    """out = ReLU(BN(x)); shortcut = conv1x1(out) if the shape changes else x; conv-BN-ReLU-conv."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Stages of PreActBlocks (widths 64..512, strides 1/2/2/2), final BN-ReLU, Linear(512, C)."""

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@MODELS.register("preactresnet18", help="PreActResNet-18 with final BN-ReLU (Tiny-ImageNet; spec §11.6)",
                 aliases=("preact18", "parn18", "preactresnet-18", "preact-resnet18"),
                 family="preactresnet", stand_in=False)
def preactresnet18(num_classes: int = 10) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes)


@MODELS.register("preactresnet34", help="PreActResNet-34 with final BN-ReLU (Tiny-ImageNet; spec §11.6)",
                 aliases=("preact34", "parn34", "preactresnet-34", "preact-resnet34"),
                 family="preactresnet", stand_in=False)
def preactresnet34(num_classes: int = 10) -> PreActResNet:
    return PreActResNet((3, 4, 6, 3), num_classes)
