"""VGG-16 with BatchNorm, kuangliu CIFAR style.

Source: single-teacher spec §4 ([AdaAD: networks/vgg.py]); used as a transfer-attack surrogate.
conv3x3(+bias)-BN-ReLU stacks with max-pools, then a pooling layer and Linear(512, C). The
reference's no-op ``AvgPool2d(1)`` is replaced by a parameter-free ``AdaptiveAvgPool2d(1)``
(identical at 32x32, where the features are already 1x1; needed for 64x64), so state-dict keys
are unchanged. Deviation: the reference hard-codes 10 classes; here ``num_classes`` is honoured.
"""
from __future__ import annotations

import torch
from torch import nn

from advkd.models.registry import MODELS

CFG_VGG16: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """``features`` (conv stacks + pools) followed by ``classifier`` = Linear(512, C)."""

    def __init__(self, cfg: tuple[int | str, ...] = CFG_VGG16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = self._make_layers(cfg)
        self.classifier = nn.Linear(512, num_classes)

    @staticmethod
    def _make_layers(cfg: tuple[int | str, ...]) -> nn.Sequential:
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                width = int(v)
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                in_channels = width
        layers.append(nn.AdaptiveAvgPool2d(1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("vgg16", help="VGG-16-BN, kuangliu CIFAR style (transfer surrogate; spec §4)",
                 aliases=("vgg-16", "vgg16-bn"), family="vgg", stand_in=False)
def vgg16(num_classes: int = 10) -> VGG:
    return VGG(CFG_VGG16, num_classes)
