"""ResNet-18/34 for CIFAR, kuangliu style (3x3 stem, no max-pool).

Source: single-teacher spec §4 and multi-teacher spec §11.1 ([AdaAD: networks/resnet.py],
[RSLAD]/[IAD]/[EXT] ``cifar10_models/resnet.py``). The standard student of every paper in scope.
Layer names (``conv1``, ``bn1``, ``layerN``, ``shortcut``, ``linear``) match those repos so their
checkpoints load strictly. The head uses adaptive average pooling, identical to ``avg_pool2d(4)``
at 32x32 and also valid for 64x64 Tiny-ImageNet inputs. PyTorch default init.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut (identity or conv1x1+BN), then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Four-stage ResNet (widths 64/128/256/512, strides 1/2/2/2) with a Linear(512, C) head."""

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@MODELS.register("resnet18", help="ResNet-18, CIFAR kuangliu style (student; spec §4, §11.1)",
                 aliases=("rn18", "resnet-18"), family="resnet", stand_in=False)
def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes)


@MODELS.register("resnet34", help="ResNet-34, CIFAR kuangliu style (transfer surrogate; spec §4)",
                 aliases=("rn34", "resnet-34"), family="resnet", stand_in=False)
def resnet34(num_classes: int = 10) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes)
