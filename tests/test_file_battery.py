"""Generated damage to the files advkd reads (hypothesis): a checkpoint truncated anywhere,
bit-flipped anywhere, or with a metadata entry replaced by a pathological value, and a resume
state likewise. The contract: loading refuses it with one line (AdvkdError), or loads exactly the
weights that were saved -- damage is never silently trained or attacked. 40 examples per test in
make test; HYPOTHESIS_PROFILE=slow runs 1000 (the profiles of tests/test_settings_schema.py)."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_files import PT, RUN

from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.models.checkpoint import load_checkpoint
from advkd.training.resume import load_resume

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("battery")
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    return runs / RUN


def _header_len(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


VALUES = st.one_of(st.sampled_from(["", "null", "NaN", "-1", "0", "1e999", "\\u0000", "[]", "{}", "tinycnn", "cifar100", "0" * 64]),
                   st.text(max_size=12), st.integers().map(str))


@FAST
@given(data=st.data())
def test_a_damaged_checkpoint_is_refused_or_loads_the_saved_weights(trained, tmp_path_factory, data):
    good = trained / "best.safetensors"
    original = _weights(load_checkpoint(good)[0])
    raw = good.read_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "flip-header", "metadata"]))
    if kind == "truncate":
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind in ("flip", "flip-header"):
        lo, hi = (0, _header_len(raw) - 1) if kind == "flip-header" else (_header_len(raw), len(raw) - 1)
        at, bit = data.draw(st.integers(lo, hi)), data.draw(st.integers(0, 7))
        damaged = bytearray(raw)
        damaged[at] ^= 1 << bit
        damaged = bytes(damaged)
    else:
        n = _header_len(raw)
        header = json.loads(raw[8:n])
        key = data.draw(st.sampled_from(sorted(header["__metadata__"])))
        header["__metadata__"][key] = data.draw(VALUES)
        body = json.dumps(header).encode()
        body += b" " * (-len(body) % 8)
        damaged = struct.pack("<Q", len(body)) + body + raw[n:]
    path = tmp_path_factory.mktemp("case") / "bad.safetensors"
    path.write_bytes(damaged)
    try:
        model, _ = load_checkpoint(path)
    except AdvkdError as e:
        assert "\n" not in str(e) and str(path) in str(e)  # one line that names the file
        return
    got = _weights(model)
    assert got.keys() == original.keys() and all(torch.equal(got[k], original[k]) for k in got)  # never silently other weights


@FAST
@given(data=st.data())
def test_a_damaged_resume_state_is_refused_or_loads_what_was_saved(trained, tmp_path_factory, data):
    raw = (trained / "resume.safetensors").read_bytes()
    saved = load_resume(trained / "resume.safetensors")
    kind = data.draw(st.sampled_from(["truncate", "flip"]))
    if kind == "truncate":
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        at = data.draw(st.integers(_header_len(raw), len(raw) - 1))
        damaged = bytearray(raw)
        damaged[at] ^= 1 << data.draw(st.integers(0, 7))
        damaged = bytes(damaged)
    run = tmp_path_factory.mktemp("run") / "pretrain-teacher" / "synthetic" / "good"
    shutil.copytree(trained, run)
    (run / "resume.safetensors").write_bytes(damaged)
    try:
        state = load_resume(run / "resume.safetensors")
    except AdvkdError as e:
        assert "\n" not in str(e) and "resume state" in str(e)
        return
    assert state.epoch == saved.epoch and all(torch.equal(state.tensors[k], saved.tensors[k]) for k in saved.tensors)


RECORDS = [{"checkpoint": f"runs/r{i}/best.safetensors", "attack": a, "accuracy": 20.5 + i, "n_examples": 100}
           for i in range(3) for a in ("clean", "pgd10")]


@FAST
@given(data=st.data())
def test_a_damaged_record_store_is_refused_in_one_line_or_read_whole_and_repair_leaves_it_readable(tmp_path_factory, data):
    from advkd.evaluation.records import append_records, read_records, repair_store

    path = tmp_path_factory.mktemp("store") / "results.jsonl"
    append_records(path, RECORDS)
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "garbage-line", "bytes"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "garbage-line":
        lines = bytes(raw).split(b"\n")
        lines.insert(data.draw(st.integers(0, len(lines) - 1)), data.draw(st.binary(max_size=40)).replace(b"\n", b""))
        raw = bytearray(b"\n".join(lines))
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    path.write_bytes(bytes(raw))
    try:
        got = read_records(path)
    except AdvkdError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert len(got) >= len(RECORDS) - 1  # whole records only: at most a torn last line is skipped
    kept, moved = repair_store(path)
    after = read_records(path)  # readable after a repair, whatever the damage
    assert len(after) == kept and kept + len(moved) >= len(RECORDS) - 1
