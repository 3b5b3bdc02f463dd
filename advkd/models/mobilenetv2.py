"""MobileNetV2, CIFAR variant (kuangliu / ARD / RSLAD layout).

Source: single-teacher spec §4 ([AdaAD: networks/mobilenetv2.py], [ARD: models/mobilenetv2.py],
[RSLAD: cifar10_models/mobilenet_v2.py]) and multi-teacher spec §11.2 ([EXT]/[ECCV]). The second
student of the AdaAD/RSLAD/B-MTARD tables. Differs from torchvision's MobileNetV2: stride-1 stem
and second stage, ReLU (not ReLU6), a 1x1 expand conv even at expansion 1, and a conv1x1+BN
shortcut when the channel count changes at stride 1. Resolution 32 -> 16 -> 8 -> 4; the head's
adaptive pool equals ``avg_pool2d(4)`` at 32x32 and also works at 64x64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS


class Block(nn.Module):
    """expand 1x1-BN-ReLU, depthwise 3x3(stride)-BN-ReLU, project 1x1-BN; residual iff stride 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: stem conv3x3 3->32 (stride 1), 17 inverted residuals, 1x1 to 1280, FC."""

    # (expansion, out_planes, num_blocks, stride)
    cfg: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),  # stride 1 instead of 2: CIFAR adaptation
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.layers = self._make_layers(in_planes=32)
        self.conv2 = nn.Conv2d(320, 1280, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def _make_layers(self, in_planes: int) -> nn.Sequential:
        layers = []
        for expansion, out_planes, num_blocks, stride in self.cfg:
            for s in [stride] + [1] * (num_blocks - 1):
                layers.append(Block(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@MODELS.register("mobilenetv2", help="MobileNetV2, CIFAR variant (student; spec §4, §11.2)",
                 aliases=("mnv2", "mobilenet-v2"), family="mobilenet", stand_in=False)
def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    return MobileNetV2(num_classes)
