"""Speed paths chosen by measurement: the rule with mocked timings (a slower bf16 loses, a tie goes
to the exact path, the result is within the margin of the fastest), the cache (a choice holds across
runs whatever a new measurement would say; a corrupt or foreign cache is ignored with one line),
forced flags, the resume rule, ``--paths measure`` and ``advkd speed``."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from tiny_runs import FAST

from advkd.cli import main
from advkd.core import speed_choice as sc
from advkd.core.accel import FastPaths, defaults_note, resolve_fast_paths
from advkd.models import build_model
from advkd.models.checkpoint import read_metadata
from advkd.training.paths import proxy_steps, settle

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def measured_paths(monkeypatch):
    """This module tests the default, measured paths (the conftest makes every other test exact)."""
    monkeypatch.setenv("ADVKD_PATHS", "auto")
F32, F32_CL, BF16, BF16_CL = sc.EXACTNESS
# the Xeon of docs/speed.md (family 6, model 207: avx512_bf16 listed, bf16 GEMMs at half the fp32 rate), mini PGD-AT step s
XEON_207 = {F32: 0.500, F32_CL: 0.380, BF16: 0.441, BF16_CL: 0.410}


def test_a_machine_where_bf16_is_slower_gets_fp32_channels_last():
    assert sc.choose(XEON_207) == F32_CL


def test_ties_and_small_gains_go_to_the_more_exact_path():
    assert sc.choose({c: 1.0 for c in sc.EXACTNESS}) == F32
    assert sc.choose({F32: 1.0, F32_CL: 0.96, BF16: 0.97, BF16_CL: 0.955}) == F32  # none beats fp32 NCHW by 5 %
    assert sc.choose({F32: 1.0, F32_CL: 0.90, BF16_CL: 0.88}) == F32_CL  # bf16 is not 5 % faster than fp32 channels-last
    assert sc.choose({F32: 1.0, F32_CL: 0.90, BF16_CL: 0.50}) == BF16_CL  # where bf16 is native and fast, it wins


@pytest.mark.parametrize("seed", range(30))
def test_the_choice_is_within_the_margin_of_the_fastest(seed):
    g = torch.Generator().manual_seed(seed)
    times = {c: float(t) for c, t in zip(sc.EXACTNESS, 0.5 + torch.rand(4, generator=g))}
    chosen = sc.choose(times)
    assert times[chosen] <= min(times.values()) * (1 + sc.MARGIN)
    faster_more_exact = [c for c in sc.EXACTNESS[: sc.EXACTNESS.index(chosen)] if times[c] <= times[chosen]]
    assert not faster_more_exact  # never a less exact path when a more exact one is as fast


def test_forced_switches_leave_only_the_open_candidates():
    assert sc.candidates(None, None) == list(sc.EXACTNESS)
    assert sc.candidates(False, None) == [F32, F32_CL]
    assert sc.candidates(None, True) == [F32_CL, BF16_CL]
    assert sc.candidates(True, False) == [BF16]
    assert resolve_fast_paths(CPU).open == ("amp", "channels_last")
    assert resolve_fast_paths(CPU, amp=False).open == ("channels_last",)
    assert resolve_fast_paths(CPU, amp=True, channels_last=True).open == ()
    assert resolve_fast_paths(CPU, amp_default=False).open == ("channels_last",)  # attacks: fp32 unless asked
    assert "open" not in FastPaths().as_record() and FastPaths(open=("amp",)) == FastPaths()


def test_the_measurement_alternates_and_takes_medians():
    calls, clock = [], itertools.count()
    steps = {c: (lambda c=c: calls.append(c)) for c in (F32, F32_CL)}
    got = sc.real_measure(steps, clock=lambda: float(next(clock)), budget_s=1e9)  # the conftest mocks sc.measure
    assert calls[:4] == [F32, F32_CL, F32, F32_CL]  # warm-up round, then rounds in turn
    assert len(calls) == 2 * (1 + sc.MAX_ROUNDS) and got == {F32: 1.0, F32_CL: 1.0}


def _key(**over):
    base = dict(student="resnet8", teachers={}, batch=64, family="no teacher", options=sc.EXACTNESS)
    return sc.key_for(CPU, **{**base, **over})


def _steps_timed(times):
    """Candidate steps whose measurement reports ``times`` (the conftest mock times all alike)."""
    return lambda: {c: (lambda: None) for c in times}


def test_the_cache_holds_the_choice_so_noise_cannot_flip_it(monkeypatch):
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: dict(XEON_207))
    first = sc.decide(_key(), _steps_timed(XEON_207))
    assert first.choice == F32_CL and "measured on this machine" in first.why and "1.32x over fp32 NCHW" in first.why
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: {F32: 1.0, F32_CL: 1.0, BF16: 1.0, BF16_CL: 0.5})  # a noisy re-measure
    again = sc.decide(_key(), _steps_timed(XEON_207))
    assert again.choice == F32_CL and again.why.startswith("cached choice") and again.measured_s == 0.0
    forced = sc.decide(_key(), _steps_timed(XEON_207), remeasure=True)  # --paths measure replaces it
    assert forced.choice == BF16_CL
    assert sc.decide(_key(), _steps_timed(XEON_207)).choice == BF16_CL
    assert sc.decide(_key(batch=128), _steps_timed(XEON_207)).why.startswith("measured")  # another batch: its own entry


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe\x00garbage", b"[]", json.dumps({"format": "other/1", "entries": {}}).encode(),
    json.dumps({"format": sc.CACHE_FORMAT, "entries": []}).encode(),
])
def test_a_corrupt_or_foreign_cache_is_ignored_with_one_line(content, monkeypatch):
    sc.cache_path().parent.mkdir(parents=True, exist_ok=True)
    sc.cache_path().write_bytes(content)
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: dict(XEON_207))
    lines = []
    got = sc.decide(_key(), _steps_timed(XEON_207), warn=lines.append)
    assert got.choice == F32_CL and len(lines) == 1 and "ignoring the speed-path cache" in lines[0]
    assert sc.read_cache() == ({_key().text(): json.loads(sc.cache_path().read_text())["entries"][_key().text()]}, "")  # replaced


@pytest.mark.parametrize("entry", [
    {"choice": "fp16 NCHW", "seconds": {"fp32 NCHW": 1.0}}, {"choice": "fp32 NCHW", "seconds": {"fp32 NCHW": "nan"}},
    {"choice": "fp32 NCHW", "seconds": {"fp32 NCHW": float("inf")}}, {"choice": "bf16 NCHW", "seconds": {"fp32 NCHW": 1.0}},
    {"choice": "fp32 NCHW", "seconds": {}}, {"choice": "fp32 NCHW", "seconds": {"fp32 NCHW": -1}}, "fp32 NCHW",
])
def test_a_malformed_entry_is_dropped_and_measured_again(entry, monkeypatch):
    sc.cache_path().parent.mkdir(parents=True, exist_ok=True)
    sc.cache_path().write_text(json.dumps({"format": sc.CACHE_FORMAT, "entries": {_key().text(): entry}}))
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: dict(XEON_207))
    lines = []
    assert sc.decide(_key(), _steps_timed(XEON_207), warn=lines.append).why.startswith("measured")
    assert len(lines) == 1 and "malformed" in lines[0]


def test_an_unwritable_cache_still_runs_and_says_it_was_not_kept(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ADVKD_CACHE_DIR", str(blocker / "cache"))  # a file where the folder would be
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: dict(XEON_207))
    lines = []
    got = sc.decide(_key(), _steps_timed(XEON_207), warn=lines.append)
    assert got.choice == F32_CL and "not cached" in got.why and len(lines) == 1 and "was not cached" in lines[0]


def test_a_failing_candidate_is_left_out_with_one_line():
    net = build_model("tinycnn", num_classes=10)
    bad = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))  # a teacher that fails on the batch
    x = torch.rand(4, 3, 8, 8)
    lines = []
    assert set(proxy_steps(net, [], x, list(sc.EXACTNESS), CPU, lines.append)) == set(sc.EXACTNESS) and not lines
    assert proxy_steps(net, [bad], torch.rand(4, 3, 4, 4), [F32, F32_CL], CPU, lines.append) == {}
    assert len(lines) == 2 and "not a candidate" in lines[0]
    assert all(p.grad is None for p in net.parameters())  # the candidates ran on copies


def test_settle_keeps_a_resumed_runs_committed_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: dict(XEON_207))
    net = build_model("tinycnn", num_classes=10)
    args = dict(device=CPU, student_arch="tinycnn", student=net, teachers={}, x=torch.rand(4, 3, 8, 8), warn=print)
    new = settle(resolve_fast_paths(CPU), run_path=tmp_path / "new", **args)
    assert (new.amp, new.channels_last, new.open) == (False, True, ()) and new.why.startswith("measured")
    from advkd.models.checkpoint import save_checkpoint

    (tmp_path / "old").mkdir()
    save_checkpoint(tmp_path / "old" / "last.safetensors", net,
                    {"arch": "tinycnn", "num_classes": 10, "dataset": "synthetic", "fast_paths": {"amp": True, "channels_last": False}})
    old = settle(resolve_fast_paths(CPU), run_path=tmp_path / "old", **args)
    assert (old.amp, old.channels_last) == (True, False) and old.why == "as the run's committed epochs ran"
    forced = settle(resolve_fast_paths(CPU, amp=False, channels_last=False), run_path=tmp_path / "old", **args)
    assert (forced.amp, forced.channels_last, forced.why) == (False, False, "")  # flags still force a path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_a_run_says_how_its_paths_were_chosen_and_records_them(env, monkeypatch, capsys):
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: {c: XEON_207[c] for c in steps})
    train = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]
    assert main([*train, "--name", "a"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "speed paths: fp32, channels-last (measured on this machine in" in err and "1.32x over fp32 NCHW, 1.16x over bf16 NCHW" in err
    meta = read_metadata(env / "runs" / "pretrain-teacher" / "synthetic" / "a" / "last.safetensors")
    assert (meta["fast_paths"]["amp"], meta["fast_paths"]["channels_last"]) == (False, True) and "open" not in meta["fast_paths"]
    assert main([*train, "--name", "b"]) == 0
    assert "(cached choice for this machine, measured" in " ".join(capsys.readouterr().err.split())
    assert main([*train, "--name", "c", "--no-channels-last"]) == 0  # a forced switch: only amp is measured, and in NCHW bf16 wins
    assert "speed paths: bf16-autocast, NCHW (measured on this machine in" in " ".join(capsys.readouterr().err.split())
    assert main([*train, "--name", "d", "--no-amp", "--no-channels-last"]) == 0  # both forced: no measurement
    assert "speed paths: fp32, NCHW (as asked" in " ".join(capsys.readouterr().err.split())
    assert main([*train, "--name", "e", "--paths", "measure"]) == 0
    assert "measured on this machine in" in capsys.readouterr().err
    assert main(["speed", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cache"] == str(sc.cache_path()) and {r["choice"] for r in shown["entries"]} == {"fp32 channels-last", "bf16 NCHW"}
    assert main(["speed"]) == 0 and "fp32 channels-last" in capsys.readouterr().out
    assert main(["speed", "--forget"]) == 0 and not sc.cache_path().exists()


def test_a_bad_paths_mode_is_one_line(env, capsys):
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--paths", "fastest"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--paths" in err


def test_the_note_names_the_flags_that_restore_fp32_nchw():
    p = FastPaths(channels_last=True, why="measured on this machine in 1.2 s: 1.30x over fp32 NCHW; cached in X")
    assert defaults_note(CPU, p) == ("speed paths: fp32, channels-last (measured on this machine in 1.2 s: 1.30x over fp32 NCHW; "
                                     "cached in X); --no-channels-last for fp32 NCHW")


def test_paths_exact_runs_fp32_nchw_without_measuring(monkeypatch):
    monkeypatch.setattr(sc, "measure", lambda steps, **kw: pytest.fail("measured"))
    got = resolve_fast_paths(CPU, paths="exact")
    assert (got.amp, got.channels_last, got.open) == (False, False, ()) and "--paths exact" in got.why
    monkeypatch.setenv("ADVKD_PATHS", "exact")
    assert resolve_fast_paths(CPU).open == () and resolve_fast_paths(CPU, channels_last=True).channels_last  # a flag still wins
    monkeypatch.setenv("ADVKD_PATHS", "fastest")
    from advkd.core.errors import AdvkdError

    with pytest.raises(AdvkdError, match="ADVKD_PATHS.*must be one of auto, measure, exact"):
        resolve_fast_paths(CPU)
