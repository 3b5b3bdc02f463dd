"""Hashes of tensors and of the state files advkd writes: the ``tensors_sha256`` of checkpoints
and resume states, and the seal of the states advkd reads back to skip work. In ``core`` because
every layer that writes such a file (models, training, attacks, evaluation) uses it."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch


def _tensor_bytes(t: torch.Tensor) -> Any:
    """The raw bytes of a CPU tensor as a buffer (no copy when it is contiguous; any dtype, bf16 included)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: what the file's
    tensor data says, independent of how safetensors lays it out (the metadata is not covered)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        digest_one(h, name, tensors[name])
    return h.hexdigest()


def digest_one(h: Any, name: str, t: torch.Tensor) -> None:
    h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
    h.update(_tensor_bytes(t.detach().cpu()))


SEAL_KEY = "state_sha256"  # sha256 of a state file's tensors and its other metadata; see seal


def _seal_of(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    h = hashlib.sha256(tensor_digest(tensors).encode())
    h.update(json.dumps({k: v for k, v in meta.items() if k != SEAL_KEY}, sort_keys=True).encode())
    return h.hexdigest()


def seal(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> dict[str, str]:
    """``meta`` with the hash of the tensors *and* the metadata, for the files advkd reads back to
    skip work (kept attack outcomes, AutoAttack's state): a flipped byte anywhere in them -- a flag,
    a stage list, the seconds -- must never become a recorded result."""
    return {**meta, SEAL_KEY: _seal_of(tensors, meta)}


def seal_problem(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str | None:
    """None when the seal holds; else what is wrong (missing, not a sha256, not matching)."""
    got = meta.get(SEAL_KEY)
    if got is None:
        return f"it has no {SEAL_KEY}"
    if not is_sha256(got):
        return f"its {SEAL_KEY} is {shown(got)}, not a sha256"
    if got != _seal_of(tensors, meta):
        return "its contents do not match their hash (damaged)"
    return None


def is_sha256(value: object) -> bool:
    """64 lowercase hex digits, as ``hashlib.sha256().hexdigest()`` writes them."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut at 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
