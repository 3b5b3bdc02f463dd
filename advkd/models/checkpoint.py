"""safetensors checkpoints with string metadata, written atomically, validated on load.

A checkpoint holds weights only (never pickle) plus the metadata needed to rebuild and trust the
model: ``arch``, ``num_classes``, ``dataset``, ``normalize``, ``method``, ``teachers`` (JSON),
``preset``, ``scale``, ``epoch``, ``metrics`` (JSON), ``config`` (JSON), ``eps``, ``seed``,
``created``, ``advkd_version``. Nested values are JSON strings, as safetensors requires.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_with
from advkd.models import build_model

FORMAT = "advkd-checkpoint-v1"
JSON_KEYS = ("teachers", "metrics", "config", "arch_map", "fast_paths")
PREFIXES = ("module.", "_orig_mod.", "model.")


# ----------------------------------------------------------------------------- save / load


def _encode_meta(meta: dict[str, Any]) -> dict[str, str]:
    out = {"format": "pt", "advkd_format": FORMAT}
    for key, value in meta.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def _decode_meta(raw: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = dict(raw)
    for key in JSON_KEYS:
        if key in meta:
            meta[key] = json.loads(meta[key])
    for key in ("num_classes", "epoch", "seed"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta


def tensors_for_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies without shared storage, as safetensors requires."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    encoded = _encode_meta(meta)
    atomic_write_with(path, lambda tmp: save_file(tensors_for_save(tensors), str(tmp), metadata=encoded))


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically."""
    for key in ("arch", "num_classes", "dataset"):
        if key not in meta:
            raise ValueError(f"checkpoint metadata needs {key!r}")
    save_tensors(path, unwrap(model).state_dict(), meta)


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and decoded metadata; AdvkdError on a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise AdvkdError(f"checkpoint {path} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdvkdError(f"checkpoint {path} is corrupt or not a safetensors file ({str(e).splitlines()[0]})") from None
    if raw.get("advkd_format") != FORMAT:
        raise AdvkdError(f"{path} is a safetensors file but not an advkd checkpoint (no advkd_format metadata)")
    try:
        return tensors, _decode_meta(raw)
    except (ValueError, json.JSONDecodeError):
        raise AdvkdError(f"checkpoint {path} has corrupt metadata") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    return read_tensors(path)[1]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` / ``model.`` prefixes from foreign state dicts (one place)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load with strict key and shape matching; AdvkdError naming the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AdvkdError(f"weights in {source} do not fit the architecture: {detail}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AdvkdError(f"weights in {source} do not fit the architecture: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    expect: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, load its weights, put it in eval mode.

    ``expect`` (e.g. ``{"dataset": "cifar10", "num_classes": 10}``) is compared with the
    metadata; a mismatch is an AdvkdError that names both values.
    """
    tensors, meta = read_tensors(path)
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if want is not None and have != want:
            raise AdvkdError(f"checkpoint {path} has {key}={have!r} but {want!r} is needed here")
    model = build_model(meta["arch"], num_classes=int(meta["num_classes"]), normalize=meta.get("normalize", "none"))
    load_state_strict(model, tensors, source=str(path))
    return model.to(device).eval(), meta
