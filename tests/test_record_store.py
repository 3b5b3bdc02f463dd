"""The record store holds whole records only: an append repairs a torn tail first (the fragment
kept in ``results.jsonl.torn``), writes its records in one go, and rolls a failed write back."""
from __future__ import annotations

import errno
import json

import pytest

from advkd.evaluation import records as store
from advkd.evaluation.records import append_records, read_records

RECS = [{"attack": "pgd10", "accuracy": 20.5, "i": i} for i in range(3)]
NEW = {"attack": "fgsm", "accuracy": 30.0, "i": 99}


def lines(recs: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs).encode()


def test_an_append_after_every_possible_torn_tail_keeps_every_whole_record(tmp_path, capsys):
    text = lines(RECS)
    ends = [len(lines(RECS[: k + 1])) - 1 for k in range(len(RECS))]  # where each record's JSON ends (its newline)
    for cut in range(len(text) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        path = d / "results.jsonl"
        path.write_bytes(text[:cut])
        append_records(path, [NEW])
        whole = sum(1 for end in ends if end <= cut)  # a record whose JSON is all there counts, newline or not
        assert read_records(path) == RECS[:whole] + [NEW], cut
        assert path.read_bytes() == lines(RECS[:whole] + [NEW]), cut  # every line whole, nothing glued
        fragment = text[:cut][len(lines(RECS[:whole])):]
        if whole < len(RECS) and fragment and not (whole and cut == ends[whole - 1]):
            assert (d / "results.jsonl.torn").read_bytes() == fragment + b"\n", cut
            assert "ended in a torn record" in capsys.readouterr().err
        else:
            assert not (d / "results.jsonl.torn").exists(), cut
            assert "torn" not in capsys.readouterr().err


def test_a_failed_write_is_rolled_back(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    append_records(path, RECS)
    before = path.read_bytes()
    real_write = store.os.write

    def disk_full(fd, data):
        real_write(fd, data[: len(data) // 2])  # part of the record reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        append_records(path, [NEW])
    monkeypatch.undo()
    assert path.read_bytes() == before and read_records(path) == RECS
    append_records(path, [NEW])
    assert read_records(path) == RECS + [NEW]
