"""advkd: adversarial robustness distillation — pretrain teachers, distill students, attack them.

The public Python API (everything else is reachable by its module path, see docs/architecture.md)::

    __version__                                  the package version
    AdvkdError                                   the exception for user-fixable mistakes
    load_split(name, split, data_dir) -> TensorData   a whole dataset split in memory (uint8)
    TensorData                                   images (N, C, H, W) uint8 + labels (N,) int64
    build_model(arch, num_classes, normalize)    an architecture of the model zoo
    save_checkpoint(path, model, meta)           safetensors weights + metadata, written atomically
    load_checkpoint(path, device, expect)        -> (model in eval mode, metadata)
    load_source(spec, device, dataset)           -> Source (.model in eval mode, .meta): checkpoint, ARCH:weights.pt, robustbench:ID
    build_method(name, teachers, **hparams)      a training method (``advkd.methods.build``)
    build_attack(name, eps=..., **params)        a named attack (``advkd.attacks.build``)
    TrainConfig                                  the settings of one training run
    resolve_config(...) -> TrainConfig           flags + preset + ``--set`` -> a checked config
    train(cfg, runs_dir=..., data_dir=...)       one training run (``advkd.training.loop.run``)
    evaluate(model, data, attacks, ...)          clean and robust accuracy under attacks
    build_table(id, records) -> Table            a paper table filled from result records
    results(runs_dir, method=..., as_frame=True) the table ``advkd results`` prints, as a pandas DataFrame
    as_model(module, normalize)                  any nn.Module (+ mean/std) -> a model of [0, 1] pixels
    attack(model, x, y, attack_id, eps=...)      adversarial examples of one attack on tensors
    evaluate_model(model, data, suite=...)       records as ``advkd attack`` writes them, on tensors / a DataLoader
    train_step(method, model, optimizer, x, y)   one training step of a method
    distill(method, student=..., teacher=...)    a whole ``advkd distill`` run

Importing ``advkd`` is cheap: every name but ``__version__`` and ``AdvkdError`` is loaded on first
use (PEP 562), because ``advkd.entry`` imports ``advkd.core.errors`` (and so this package) before
torch, to catch Ctrl-C during start-up.
"""
from __future__ import annotations

import importlib
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.version import __version__

#: public name -> (module, attribute), imported on first access
_LAZY = {
    "load_split": ("advkd.data.loaders", "load_split"),
    "TensorData": ("advkd.data.batches", "TensorData"),
    "build_model": ("advkd.models", "build_model"),
    "save_checkpoint": ("advkd.models.checkpoint", "save_checkpoint"),
    "load_checkpoint": ("advkd.models.checkpoint", "load_checkpoint"),
    "load_source": ("advkd.evaluation.sources", "load_source"),
    "build_method": ("advkd.methods", "build"),
    "build_attack": ("advkd.attacks", "build"),
    "TrainConfig": ("advkd.training.config", "TrainConfig"),
    "resolve_config": ("advkd.training.config", "resolve_config"),
    "train": ("advkd.training.loop", "run"),
    "evaluate": ("advkd.evaluation.evaluate", "evaluate"),
    "build_table": ("advkd.report", "build_table"),
    "results": ("advkd.report.results", "results"),
    "as_model": ("advkd.api", "as_model"),
    "attack": ("advkd.api", "attack"),
    "evaluate_model": ("advkd.api", "evaluate_model"),
    "train_step": ("advkd.api", "train_step"),
    "distill": ("advkd.api", "distill"),
}

__all__ = ["__version__", "AdvkdError", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'advkd' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public names (notebook tab completion), not this module's own imports."""
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
