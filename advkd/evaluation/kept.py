"""Finished attacks of an interrupted suite, kept so that a rerun of the same command skips them.

``advkd attack`` appends its records when the whole suite is done (the sanity flags compare the
attacks). A suite stopped by a cluster's SIGTERM, a Ctrl-C or a crash would otherwise redo every
attack; instead each finished attack's flags, seconds and extras are written to the suite's state
folder (``<runs dir>/attack-state/<sha>-<n>-<eps>``, removed when the suite completes), with this
process's RNG state after the attack, so the attacks after it draw the same random numbers as in
an uninterrupted run. A kept outcome is used only when its attack's parameters and the context
(seed, batch size, surrogate) are the same as the rerun's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from advkd.core.distributed import rank
from advkd.core.files import save_tensors
from advkd.core.progress import warn
from advkd.core.tensor_hash import seal, seal_problem

KEPT_FILE = "kept-rank{rank}.safetensors"


def _path(state_dir: Path, attack_id: str) -> Path:
    return Path(state_dir) / attack_id / KEPT_FILE.format(rank=rank())


def _rng() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out.update({f"rng.cuda.{i:02d}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def keep(state_dir: Path, attack_id: str, correct: torch.Tensor, seconds: float, extra: dict[str, Any], signature: dict[str, Any]) -> None:
    """Write one finished attack (every rank its own file: the RNG state is per rank)."""
    tensors = {"correct": correct.to(torch.uint8).cpu().contiguous(), **_rng()}
    meta = {"seconds": json.dumps(seconds), "extra": json.dumps(extra), "signature": json.dumps(signature, sort_keys=True, default=str)}
    save_tensors(_path(state_dir, attack_id), tensors, seal(tensors, meta))


def kept(state_dir: Path, attack_id: str, n: int, signature: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]] | None:
    """(flags, seconds, extra) of a kept attack with this ``signature`` and ``n`` points, restoring
    the RNG state it left; None when there is none (or it does not match, or cannot be read)."""
    path = _path(state_dir, attack_id)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta["signature"]) != json.loads(json.dumps(signature, sort_keys=True, default=str)):
            return None
        tensors = load_file(str(path))
        problem = seal_problem(tensors, meta)
        if problem:
            warn(f"kept outcome {path} is not used: {problem}; attacking again")
            return None
        correct = tensors["correct"].bool()
        if correct.numel() != n:
            return None
        seconds, extra = float(json.loads(meta["seconds"])), json.loads(meta["extra"])
    except Exception:  # noqa: BLE001 - an unreadable or foreign file: attack again
        return None
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return correct, seconds, extra
