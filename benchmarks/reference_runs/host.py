"""Run a pinned reference script in this process, on advkd's data, networks and teachers.

The host resolves the same config ``advkd distill`` would (method, preset, seed, teachers), builds
advkd's :class:`~advkd.training.setup.Setup` from it (teachers loaded and checked, the training
subset, the stand-in student's architecture), then executes the reference script with ``REF`` (a
:class:`Host`) in its globals. Three shims stand in for the environment the script expects, and
change no computation: ``.cuda()`` on tensors and modules returns the object itself (the CPU),
``torchvision.datasets.CIFAR10`` reads ADVKD_DATA_DIR (the offline copy's md5 differs from the
original's, so torchvision's check is skipped; images, labels and order are the same), and the
modules a script imports that its repository does not provide (``SHIMS``).
"""
from __future__ import annotations

import contextlib
import io
import math
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import Subset

from advkd.models import build_model
from advkd.training.schedule import OPTIMIZER_BUILDERS
from advkd.training.setup import Setup

__all__ = ["Host", "cpu_only", "offline_cifar10", "SHIMS", "install_shims"]


class Host:
    """``REF`` in the reference script: the reduced scale's settings and advkd's objects."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        cfg = setup.cfg
        self.seed = int(cfg.seed)
        self.epochs = int(cfg.epochs)
        self.batch_size = int(cfg.batch_size)
        self.milestones = [int(m) for m in cfg.milestones]
        self.train_images = len(setup.train_data)
        self.built: list[nn.Module] = []

    def student(self) -> nn.Module:
        """A fresh stand-in student; its initial weights come from the script's RNG at this point."""
        cfg = self.setup.cfg
        model = build_model(cfg.arch, num_classes=self.setup.num_classes, normalize=cfg.normalize)
        self.built.append(model)
        return model

    def teacher(self, role: str) -> nn.Module:
        """The teacher checkpoint advkd's run of the same config uses for ``role``, in eval mode."""
        return self.setup.teachers[role].model.eval()

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        cfg = self.setup.cfg
        return OPTIMIZER_BUILDERS[cfg.optimizer](cfg, params)

    def train_subset(self, dataset: Any) -> Subset:
        """The first N training images in stored order, as advkd's ``train_subset`` takes them."""
        if len(dataset) < self.train_images:
            raise ValueError(f"the training set has {len(dataset)} images, fewer than the {self.train_images} asked for")
        return Subset(dataset, range(self.train_images))

    def evaluate_in_script(self, epoch: int) -> bool:
        return False

    def skip_test(self, script_globals: dict[str, Any]) -> None:
        """AdaAD's ``test(epoch)`` is skipped; the names it would set are set to NaN / -1 so the
        script's log lines after it still run."""
        for name in ("Test_acc", "Test_PGD10_acc", "test_loss"):
            script_globals[name] = math.nan
        for name in ("best_Test_acc_epoch", "best_Test_PGD10_acc_epoch"):
            script_globals.setdefault(name, -1)


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """``.cuda()`` returns the tensor or module itself while the script runs."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved  # type: ignore[method-assign]


def offline_cifar10(data_dir: Path, *, with_index: bool = False) -> type:
    """torchvision's CIFAR10 reading ``data_dir`` whatever root the script names, never
    downloading; ``with_index`` also returns each item's index (the MTARD-extension's dataset)."""
    base = torchvision.datasets.CIFAR10

    class OfflineCIFAR10(base):  # type: ignore[misc, valid-type]
        def __init__(self, root: Any = None, train: bool = True, transform: Any = None,
                     target_transform: Any = None, download: bool = False) -> None:
            super().__init__(str(data_dir), train=train, transform=transform, target_transform=target_transform, download=False)

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:  # the class names, without torchvision's md5 check
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        def __getitem__(self, index: int) -> tuple:
            item = super().__getitem__(index)
            return (*item, index) if with_index else item

    return OfflineCIFAR10


def _dataset_module(data_dir: Path) -> types.ModuleType:
    """``dataset`` for the MTARD-extension script: CIFAR10 yielding (image, label, index)."""
    mod = types.ModuleType("dataset")
    mod.CIFAR10 = offline_cifar10(data_dir, with_index=True)  # type: ignore[attr-defined]
    mod.CIFAR100 = mod.SVHN = None  # type: ignore[attr-defined]  # imported by name, not used on CIFAR-10
    return mod


def _utils_module(data_dir: Path) -> types.ModuleType:
    """``utils`` for AdaAD: its progress bar reads the terminal size at import ('stty size'),
    which fails without a terminal; this one prints nothing."""
    mod = types.ModuleType("utils")
    mod.progress_bar = lambda *a, **k: None  # type: ignore[attr-defined]
    return mod


SHIMS = {"dataset": _dataset_module, "utils": _utils_module}


@contextlib.contextmanager
def install_shims(names: list[str], data_dir: Path) -> Iterator[None]:
    saved_cifar = torchvision.datasets.CIFAR10
    torchvision.datasets.CIFAR10 = offline_cifar10(data_dir)  # type: ignore[misc]
    for name in names:
        sys.modules[name] = SHIMS[name](data_dir)
    try:
        yield
    finally:
        torchvision.datasets.CIFAR10 = saved_cifar  # type: ignore[misc]
        for name in names:
            sys.modules.pop(name, None)


class Tee(io.TextIOBase):
    """The script's prints go to its log file and, when asked, to the console."""

    def __init__(self, log: io.TextIOBase, echo: io.TextIOBase | None) -> None:
        self.log, self.echo = log, echo

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.echo is not None:
            self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        if self.echo is not None:
            self.echo.flush()
