"""Mean/std input normalisation as a wrapper module.

Why: the AdaAD/B-MTARD students and the LTD/TRADES teachers take raw [0,1] pixels, but the
Bag-of-Tricks and Rice et al. checkpoints were trained with mean/std normalisation outside the
model (single-teacher spec §4.1, multi-teacher spec §12 pitfall 13). Wrapping keeps attacks in
pixel space and records the statistics in the checkpoint (buffers ``normalize.mean/std``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advkd.core.errors import AdvkdError

Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: name -> (mean, std) per RGB channel, or None for "no normalisation".
NORMALIZATIONS: dict[str, Stats | None] = {
    "none": None,
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def get_normalization(name: str) -> Stats | None:
    """Stats for a normalisation name (case-insensitive); AdvkdError listing valid names if unknown."""
    key = name.strip().lower().replace("_", "-").replace("-", "")
    if key not in NORMALIZATIONS:
        raise AdvkdError(f"unknown normalize {name!r}; valid: {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[key]


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel statistics stored as persistent buffers (1x3x1x1)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise AdvkdError(f"normalisation mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise AdvkdError(f"normalisation std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, " \
               f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"


class Normalized(nn.Module):
    """``net(Normalize(mean, std)(x))``: a network that takes [0,1] pixels.

    State-dict keys: ``normalize.mean``, ``normalize.std`` and ``net.*``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
