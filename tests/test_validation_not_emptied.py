"""Validation that cannot be emptied: a tensor hash that is present but not a sha256 (empty,
truncated, not hex, not a string) is damage, never "no hash"; a resume state's position (epoch,
batch inside the epoch, examples seen, running sums, one entry per process) is checked against the
run's own epoch length before any of it is used. Each is refused by the command that reads the
file with exit 2, one line that names the file, and nothing changed on disk. Files written before
the hash existed still load (tests/test_bad_files.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_bad_files import PT, RUN, craft, flip_low_bit
from test_bad_inputs import refused_line, tree

from advkd.cli import main
from advkd.core.runs import RESUME
from advkd.models.checkpoint import DIGEST_KEY, is_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (1 epoch of 2 batches: 32 images, batch 16)."""
    runs = tmp_path_factory.mktemp("trained")
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    return runs


GOOD = "0" * 64


@pytest.mark.parametrize("digest", ["", GOOD[:63], GOOD + "0", "Z" * 64, GOOD.upper().replace("0", "A"), 12345, "not-a-hash", " " * 64])
def test_a_hash_that_is_not_a_sha256_refuses_the_checkpoint(trained, tmp_path, digest, capsys):
    bad = tmp_path / "bad.safetensors"
    craft(trained / RUN / "best.safetensors", bad, meta=lambda m: m.__setitem__(DIGEST_KEY, digest), rehash=False)
    flip_low_bit(bad, "linear.weight")  # what an emptied hash would let through
    runs = tmp_path / "runs"
    runs.mkdir()
    before = tree(tmp_path)
    line = refused_line(str(digest), ["attack", str(bad), "--attacks", "clean", "--n", "8", "--runs-dir", str(runs),
                                      "--data-dir", str(tmp_path)], capsys)
    assert str(bad) in line and f"its {DIGEST_KEY} is" in line and "not a sha256" in line
    assert tree(tmp_path) == before and not (runs / "results.jsonl").exists()


def test_the_sha256_shape():
    assert is_sha256("a" * 64) and is_sha256("0123456789abcdef" * 4)
    assert not any(is_sha256(v) for v in ("", "A" * 64, "g" * 64, "a" * 63, None, 1, ["a" * 64]))


def _with_state(run: Path, **edits) -> None:
    """Rewrite the run's resume state with ``edits`` applied to its ``state`` metadata (its tensors
    and their hash unchanged: the hash covers tensors, and these fields are where a damaged or
    crafted file would differ)."""
    path = run / RESUME
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    state = json.loads(meta["state"])
    for key, value in edits.items():
        state[key] = value
    meta["state"] = json.dumps(state)
    save_file(load_file(str(path)), str(path), metadata=meta)


# (case, edits of the state): every one is a position the run cannot continue from
POSITIONS = [
    ("beyond-the-epoch", {"partial": {"step": 999, "totals": [{"loss": 2.0}], "seen": [16]}}),
    ("at-the-epoch-end", {"partial": {"step": 2, "totals": [{"loss": 2.0}], "seen": [32]}}),
    ("batch-zero", {"partial": {"step": 0, "totals": [{"loss": 2.0}], "seen": [16]}}),
    ("negative-batch", {"partial": {"step": -1, "totals": [{"loss": 2.0}], "seen": [16]}}),
    ("batch-as-text", {"partial": {"step": "1", "totals": [{"loss": 2.0}], "seen": [16]}}),
    ("batch-as-float", {"partial": {"step": 1.0, "totals": [{"loss": 2.0}], "seen": [16]}}),
    ("more-seen-than-batches", {"partial": {"step": 1, "totals": [{"loss": 2.0}], "seen": [17]}}),
    ("nothing-seen", {"partial": {"step": 1, "totals": [{"loss": 2.0}], "seen": [0]}}),
    ("nan-sums", {"partial": {"step": 1, "totals": [{"loss": float("nan")}], "seen": [16]}}),
    ("sums-as-text", {"partial": {"step": 1, "totals": [{"loss": "2"}], "seen": [16]}}),
    ("two-processes", {"partial": {"step": 1, "totals": [{"loss": 2.0}, {"loss": 2.0}], "seen": [16, 16]}}),
    ("negative-epoch", {"epoch": -1}),
    ("best-after-epoch", {"best_epoch": 5}),
]


@pytest.mark.parametrize("case,edits", POSITIONS, ids=[c for c, _ in POSITIONS])
def test_a_resume_state_whose_position_does_not_fit_the_run_is_refused(trained, tmp_path, case, edits, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs)
    _with_state(runs / RUN, **edits)
    before = tree(runs)
    line = refused_line(case, [*PT, "--runs-dir", str(runs), "--name", "good", "--resume", "--epochs", "2"], capsys)
    assert str(runs / RUN) in line
    assert tree(runs) == before  # nothing trained, nothing committed


def test_a_fitting_mid_epoch_position_still_resumes(trained, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs)
    _with_state(runs / RUN, partial={"step": 1, "totals": [{"loss": 2.0}], "seen": [16]})
    assert main([*PT, "--runs-dir", str(runs), "--name", "good", "--resume", "--epochs", "2"]) == 0
