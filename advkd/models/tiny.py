"""Tiny stand-in networks for fast CPU unit tests (not from any paper).

Why: training/attack/distillation code paths must be testable in seconds on a laptop. ``tinycnn``
contains BatchNorm so train/eval-mode behaviour (spec pitfalls on BN mode) is testable; ``tinymlp``
has no BN and no convolutions. Both take [0,1] images of any size >= 8x8 (adaptive pooling).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkd.models.registry import MODELS


class TinyCNN(nn.Module):
    """conv3x3 3->16 + BN + ReLU + maxpool, conv3x3 16->32 + BN + ReLU, global avg pool, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class TinyMLP(nn.Module):
    """Adaptive avg-pool to 8x8, flatten (192), Linear-ReLU (64 hidden), Linear. No BatchNorm."""

    def __init__(self, num_classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(x, 8).flatten(1)
        return self.fc2(F.relu(self.fc1(out)))


@MODELS.register("tinycnn", help="Tiny 2-conv CNN with BatchNorm (CPU test stand-in)",
                 aliases=("tiny-cnn",), family="tiny", stand_in=True)
def tinycnn(num_classes: int = 10) -> TinyCNN:
    return TinyCNN(num_classes)


@MODELS.register("tinymlp", help="Tiny MLP without BatchNorm (CPU test stand-in)",
                 aliases=("tiny-mlp",), family="tiny", stand_in=True)
def tinymlp(num_classes: int = 10) -> TinyMLP:
    return TinyMLP(num_classes)
