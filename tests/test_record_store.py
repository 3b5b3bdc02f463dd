"""The record store holds whole records only: an append repairs a torn tail first (the fragment
kept in ``results.jsonl.torn``), writes its records in one go, and rolls a failed write back."""
from __future__ import annotations

import errno
import json

import pytest

from advkd.evaluation import records as store
from advkd.evaluation.records import append_records, read_records

RECS = [{"checkpoint": "a.safetensors", "attack": "pgd10", "accuracy": 20.5, "i": i} for i in range(3)]
NEW = {"checkpoint": "b.safetensors", "attack": "fgsm", "accuracy": 30.0, "i": 99}


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


# ----------------------------------------------------------------------------- the schema, and bad lines

GOOD = {"checkpoint": "a.safetensors", "attack": "pgd10", "accuracy": 20.5, "n_examples": 100}
BAD_LINES = {
    "not-json": '{"attack": ',
    "not-an-object": "[1, 2]",
    "accuracy-text": json.dumps({**GOOD, "accuracy": "abc"}),
    "accuracy-nan": json.dumps({**GOOD, "accuracy": float("nan")}),  # json.dumps writes the bare NaN token
    "accuracy-out-of-range": json.dumps({**GOOD, "accuracy": 150.0}),
    "accuracy-bool": json.dumps({**GOOD, "accuracy": True}),
    "no-checkpoint": json.dumps({k: v for k, v in GOOD.items() if k != "checkpoint"}),
    "no-attack": json.dumps({k: v for k, v in GOOD.items() if k != "attack"}),
    "n-examples-negative": json.dumps({**GOOD, "n_examples": -1}),
    "seconds-infinite": json.dumps({**GOOD, "seconds": float("inf")}),
    "clean-accuracy-text": json.dumps({**GOOD, "clean_accuracy": "high"}),
    "knowledge-without-value": json.dumps({"checkpoint": "a", "kind": "knowledge_scale", "attack": None, "value": "x"}),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_line_in_the_middle_is_named_with_its_number(tmp_path, case):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + BAD_LINES[case] + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(store.AdvkdError, match=r"line 2 .*advkd results --repair"):
        read_records(path)


@pytest.mark.parametrize("case", [c for c in BAD_LINES if c != "not-json"])
def test_a_complete_but_invalid_last_line_is_not_taken_for_a_torn_one(tmp_path, case):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + BAD_LINES[case] + "\n")
    with pytest.raises(store.AdvkdError, match="line 2"):
        read_records(path)


@pytest.mark.parametrize("bad", [{**GOOD, "accuracy": float("nan")}, {**GOOD, "accuracy": "abc"}, {"attack": "x", "accuracy": 1.0},
                                 {**GOOD, "accuracy": -0.5}, {**GOOD, "n_examples": 0}])
def test_advkd_never_writes_a_record_it_would_refuse_to_read(tmp_path, bad):
    path = tmp_path / "results.jsonl"
    append_records(path, [GOOD])
    before = path.read_bytes()
    with pytest.raises(store.AdvkdError, match="malformed record"):
        append_records(path, [GOOD, bad])
    assert path.read_bytes() == before  # not even the good record of the batch


def test_repair_moves_bad_lines_aside_and_keeps_the_original(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({**GOOD, "i": 0}), BAD_LINES["accuracy-text"], json.dumps({**GOOD, "i": 1}), BAD_LINES["not-json"],
             json.dumps({**GOOD, "i": 2})]
    original = ("\n".join(lines) + "\n").encode()
    path.write_bytes(original)
    kept, moved = store.repair_store(path)
    assert (kept, moved) == (3, [2, 4])
    assert [r["i"] for r in read_records(path)] == [0, 1, 2]
    assert (tmp_path / "results.jsonl.before-repair").read_bytes() == original
    side = [json.loads(line) for line in (tmp_path / "results.jsonl.bad").read_text().splitlines()]
    assert [(s["line"], s["text"]) for s in side] == [(2, lines[1]), (4, lines[3])]
    assert store.repair_store(path) == (3, [])  # a clean store is left alone
    append_records(path, [{**GOOD, "i": 3}])
    assert [r["i"] for r in read_records(path)] == [0, 1, 2, 3]


def test_json_output_never_holds_nan():
    from advkd.core import jsonsafe

    text = jsonsafe.dumps({"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": (2.5,)})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2.5]}
