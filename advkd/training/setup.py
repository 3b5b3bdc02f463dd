"""``Setup``: everything one training run needs, validated before anything is written.

Its own module because both the loop (:mod:`advkd.training.loop`, which builds it in ``prepare``
and trains from it) and the run directory (:mod:`advkd.training.rundir`, which writes its config
and checkpoint metadata) read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkd.core.accel import FastPaths
from advkd.data.batches import TensorData
from advkd.methods import Method
from advkd.training.config import TrainConfig
from advkd.training.teachers import Teacher


@dataclass
class Setup:
    """Everything a run needs, built and validated before anything is written."""

    cfg: TrainConfig
    device: torch.device
    model: nn.Module
    method: Method
    teachers: dict[str, Teacher]
    train_data: TensorData
    eval_data: TensorData
    num_classes: int
    path: Path
    fast: FastPaths = field(default_factory=FastPaths)
