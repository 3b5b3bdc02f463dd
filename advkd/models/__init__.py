"""Model zoo: every architecture used by the single- and multi-teacher specs, in one registry.

Source: single-teacher spec §4 and multi-teacher spec §11. All models take [0,1] pixels of shape
(B, 3, H, W), H = W = 32 (CIFAR) or 64 (Tiny-ImageNet), and return logits. Heads use adaptive
average pooling so both sizes work.

Public API:

- ``MODELS``: the architecture :class:`~advkd.core.registry.Registry` (entries carry meta ``family``
  and ``stand_in``; CIFAR ResNets also ``shortcut``, WRNs ``style``, DeepMind WRNs ``internal_norm``).
- ``build_model(name, num_classes=10, normalize="none")``.
- ``list_models(pattern=None)``, ``canonical_arch(name)``, ``count_parameters(model)``.
- ``NORMALIZATIONS``, ``Normalize``, ``Normalized``.

Pipeline stage 2. Also holds ``checkpoint`` (safetensors checkpoints: ``save_checkpoint``,
``load_checkpoint`` rebuilds the model a checkpoint names). May import: ``advkd.core`` only.
"""
from __future__ import annotations

from typing import Any

from torch import nn

# Importing the family modules registers their architectures; the order here is the order
# of ``list_models()``.
# isort: off
from advkd.models import resnet  # noqa: F401
from advkd.models import preact_resnet  # noqa: F401
from advkd.models import three_stage_resnet  # noqa: F401
from advkd.models import wide_resnet  # noqa: F401
from advkd.models import dm_wide_resnet  # noqa: F401
from advkd.models import mobilenetv2  # noqa: F401
from advkd.models import vgg  # noqa: F401
from advkd.models import tiny  # noqa: F401
# isort: on
from advkd.models.normalize import NORMALIZATIONS, Normalize, Normalized, get_normalization
from advkd.models.registry import MODELS

__all__ = [
    "MODELS",
    "NORMALIZATIONS",
    "Normalize",
    "Normalized",
    "build_model",
    "canonical_arch",
    "count_parameters",
    "get_normalization",
    "list_models",
]


def build_model(name: str, num_classes: int = 10, normalize: str = "none", **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` (or an alias) with ``num_classes`` outputs.

    ``normalize`` names an entry of :data:`NORMALIZATIONS`. For ordinary architectures a value other
    than ``"none"`` returns ``Normalized(net, mean, std)`` (buffers ``normalize.mean/std``, network
    under ``net``). Architectures with normalisation built into their definition (meta
    ``internal_norm``: the DeepMind WRNs) are never wrapped, since that would normalise twice:
    ``"none"`` keeps their default (CIFAR-10) statistics and any other value sets their internal
    statistics instead. Extra keyword arguments go to the architecture's constructor (e.g.
    ``sub_block1=True`` for the Zagoruyko WRNs). Unknown names raise :class:`AdvkdError`.
    """
    entry = MODELS.entry(name)
    stats = get_normalization(normalize)
    if entry.meta.get("internal_norm"):
        if stats is not None:
            kwargs = {"mean": stats[0], "std": stats[1], **kwargs}
        return entry.obj(num_classes=num_classes, **kwargs)
    net = entry.obj(num_classes=num_classes, **kwargs)
    if stats is None:
        return net
    return Normalized(net, stats[0], stats[1])


def list_models(pattern: str | None = None) -> list[str]:
    """Canonical names of all registered architectures, optionally filtered by a glob pattern."""
    return MODELS.names(pattern)


def canonical_arch(name: str) -> str:
    """The registered name behind ``name`` (which may be an alias); AdvkdError if unknown."""
    return MODELS.canonical(name)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), excluding buffers."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
