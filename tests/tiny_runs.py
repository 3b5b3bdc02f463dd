"""Tiny training runs shared by the run-dir tests (kill points, locks, resumable state)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from advkd.core.progress import Reporter
from advkd.training.config import TrainConfig

CPU = torch.device("cpu")
# CLI flags of a one-epoch run on 64 synthetic images with 2-step inner attacks (seconds per run)
FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32", "--set", "method.steps=2"]


def tiny_cfg(**kw) -> TrainConfig:
    """tests/test_train.py's tiny run: synthetic data, tinycnn, 3 batches an epoch."""
    base = dict(
        kind="pretrain-teacher", method="pgd-at", arch="tinycnn", dataset="synthetic", epochs=2, batch_size=32,
        train_subset=96, eval_examples=64, eval_batch_size=64, milestones=[1], lr=0.05, seed=7,
        method_params={"steps": 2},
    )
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


class Capture(Reporter):
    """A silent reporter that keeps the log lines."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics_without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]
