"""States advkd reads back to skip work -- a kept attack outcome, AutoAttack's stage state -- carry
a seal over their tensors and metadata (advkd.models.checkpoint.seal): damage anywhere in them
(a flipped flag, a changed stage list or seconds, a removed, empty or malformed seal) is never used
as a result. A kept outcome is attacked again, with one warning; an AutoAttack state is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from advkd.core.tensor_hash import SEAL_KEY
from advkd.evaluation.kept import KEPT_FILE, keep, kept

SIG = {"attack": "pgd10", "seed": 0}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    return load_file(str(path)), meta


def _kept_file(state: Path) -> Path:
    return state / "pgd10" / KEPT_FILE.format(rank=0)


DAMAGE = {
    "a flag flipped": lambda t, m: (t.__setitem__("correct", 1 - t["correct"]), m)[1],
    "seconds changed": lambda t, m: {**m, "seconds": "0.5"},
    "extra changed": lambda t, m: {**m, "extra": json.dumps({"note": "edited"})},
    "seal removed": lambda t, m: {k: v for k, v in m.items() if k != SEAL_KEY},
    "seal empty": lambda t, m: {**m, SEAL_KEY: ""},
    "seal upper-case": lambda t, m: {**m, SEAL_KEY: m[SEAL_KEY].upper()},
    "rng state changed": lambda t, m: (t.__setitem__("rng.cpu", torch.zeros_like(t["rng.cpu"])), m)[1],
}


def test_an_intact_kept_outcome_is_used(tmp_path):
    correct = torch.tensor([True, False, True, True])
    keep(tmp_path, "pgd10", correct, 1.25, {"note": "x"}, SIG)
    got = kept(tmp_path, "pgd10", 4, SIG)
    assert got is not None and torch.equal(got[0], correct) and got[1:] == (1.25, {"note": "x"})


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_kept_outcome_is_attacked_again_with_one_warning(tmp_path, capsys, damage):
    keep(tmp_path, "pgd10", torch.tensor([True, False, True, True]), 1.25, {"note": "x"}, SIG)
    path = _kept_file(tmp_path)
    tensors, meta = _read(path)
    meta = DAMAGE[damage](tensors, meta)
    save_file(tensors, str(path), metadata=meta)
    capsys.readouterr()
    assert kept(tmp_path, "pgd10", 4, SIG) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attacking again" in err[0] and str(path) in err[0]
