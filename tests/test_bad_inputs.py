"""The error contract, invocation by invocation: every malformed command ends with exit code 2,
exactly one line on stderr, no traceback, and nothing created or changed on disk.

Each case runs in-process in a fresh folder holding a fresh runs dir (plus the files the case
needs: crafted checkpoints, datasets, presets, run dirs), with that folder as the working
directory; the whole folder is snapshotted (path, size, mtime) before and after. Path traversal
is tried wherever a name or a path is taken; crafted files are truncated, random, missing
metadata or carry pickle payloads that would create a marker file if they ran.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advkd.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SYN = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "32", "--n-examples", "16", "--batch-size", "16", "--set", "method.steps=1"]
PT = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *SYN]
DI = ["distill", "--method", "rslad", "--student", "tinycnn", *SYN]


class Payload:
    """A pickle that creates ``MARKER`` (in the working directory) when it is loaded."""

    def __reduce__(self):
        return (open, ("MARKER", "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Files the cases copy: a real tiny checkpoint and crafted ones, data dirs, presets, a run dir."""
    root = tmp_path_factory.mktemp("world")
    runs = root / "trained"
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    good = runs / "pretrain-teacher" / "synthetic" / "good" / "best.safetensors"
    shutil.copy(good, root / "good.safetensors")
    data = good.read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (root / "random.safetensors").write_bytes(os.urandom(4096))
    save_file({"w": torch.zeros(2)}, str(root / "noarch.safetensors"), metadata={"format": "pt"})
    with open(root / "payload.pt", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    # datasets: a CIFAR-10 folder whose batch files carry a payload / are truncated
    for name, content in (("cifar-payload", pickle.dumps(Payload())), ("cifar-truncated", pickle.dumps({b"data": b"x" * 99})[:20])):
        folder = root / name / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / batch).write_bytes(content)
    # presets
    (root / "binary.yaml").write_bytes(os.urandom(512) + b"\xff\xfe")
    (root / "broken.yaml").write_text("train: {epochs: [1, 2\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "badkey.yaml").write_text("trian: {epochs: 1}\n")
    # a run dir whose config.yaml is broken (for --resume), and results files
    run = runs / "pretrain-teacher" / "synthetic" / "good"
    (run / "config.yaml").write_text("epochs: [\n")
    (root / "results-not-object.jsonl").write_text('[1, 2]\n')
    (root / "results-bad-json.jsonl").write_text('{"attack": \n{"attack": "clean"}\n')  # a torn line that is not the last
    good_record = '{"checkpoint": "x.safetensors", "attack": "clean", "accuracy": 50.0}\n'
    (root / "results-accuracy-text.jsonl").write_text('{"checkpoint": "x.safetensors", "attack": "pgd10", "accuracy": "abc"}\n' + good_record)
    (root / "results-nan.jsonl").write_text('{"checkpoint": "x.safetensors", "attack": "pgd10", "accuracy": NaN}\n' + good_record)
    (root / "results-no-checkpoint.jsonl").write_text('{"attack": "pgd10", "accuracy": 12.0}\n' + good_record)
    return root


def refused_line(case: str, args: list[str], capsys) -> str:
    """Run ``args``; assert the error contract (exit 2, exactly one ``advkd: error:`` line on
    stderr, no traceback) and return that line. The caller checks the disk."""
    rc = main(args)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert rc == 2, f"{case}: exit {rc}, stderr {out.err[-600:]!r}"
    assert len(lines) == 1, f"{case}: {len(lines)} stderr lines: {out.err[-800:]!r}"
    assert lines[0].startswith("advkd: error: ") and "Traceback" not in out.err + out.out
    return lines[0]


def tree(root: Path) -> dict[str, tuple[int, int] | str]:
    """Every file's (size, mtime) and every folder's existence (a folder's mtime moves when a run
    takes and drops its lock file inside it, which changes nothing)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# (id, argv with {w} = the world copy, {r} = the fresh runs dir, {d} = an empty data dir; files copied into the case folder)
CASES: list[tuple[str, list[str], list[str]]] = [
    # ------------------------------------------------------------------ pretrain-teacher
    ("pt-arch", ["pretrain-teacher", "--arch", "nope", *SYN[:2]], []),
    ("pt-method", [*PT, "--method", "nope"], []),
    ("pt-teacher-method", [*PT, "--method", "rslad"], []),
    ("pt-epochs-0", [*PT, "--epochs", "0"], []),
    ("pt-epochs-neg", [*PT, "--epochs", "-1"], []),
    ("pt-batch-0", [*PT, "--batch-size", "0"], []),
    ("pt-lr-0", [*PT, "--lr", "0"], []),
    ("pt-lr-nan", [*PT, "--lr", "nan"], []),
    ("pt-lr-inf", [*PT, "--lr", "inf"], []),
    ("pt-set-lr-nan", [*PT, "--set", "lr=.nan"], []),
    ("pt-set-lr-text", [*PT, "--set", "lr=abc"], []),
    ("pt-momentum-neg", [*PT, "--set", "momentum=-5"], []),
    ("pt-gamma-neg", [*PT, "--set", "lr_gamma=-1"], []),
    ("pt-wd-neg", [*PT, "--set", "weight_decay=-2e-4"], []),
    ("pt-set-unknown", [*PT, "--set", "nope=1"], []),
    ("pt-set-no-equals", [*PT, "--set", "lr"], []),
    ("pt-milestones", [*PT, "--set", "milestones=[3,1]"], []),
    ("pt-eval-attack", [*PT, "--set", "eval_attack=bogus"], []),
    ("pt-eval-eps", [*PT, "--set", "eval_eps=2"], []),
    ("pt-select", [*PT, "--set", "select=nope"], []),
    ("pt-lr-step", [*PT, "--set", "lr_step=sometimes"], []),
    ("pt-scale", [*PT, "--set", "scale=paper"], []),
    ("pt-method-eps", [*PT, "--set", "method.eps=8/255/3"], []),
    ("pt-method-steps", [*PT, "--set", "method.steps=-1"], []),
    ("pt-method-unknown", [*PT, "--set", "method.nope=1"], []),
    ("pt-subset-neg", [*PT, "--train-subset", "-5"], []),
    ("pt-n-neg", [*PT, "--n-examples", "-1"], []),
    ("pt-name-dotdot", [*PT, "--name", "../../../escape"], []),
    ("pt-name-abs", [*PT, "--name", "{c}/abs-escape"], []),
    ("pt-name-dot", [*PT, "--name", "."], []),
    ("pt-name-long", [*PT, "--name", "n" * 300], []),
    ("pt-set-name", [*PT, "--set", "name=../../x"], []),
    ("pt-set-kind", [*PT, "--set", "kind=../../x"], []),
    ("pt-preset-unknown", [*PT, "--preset", "nope"], []),
    ("pt-preset-binary", [*PT, "--preset", "{w}/binary.yaml"], []),
    ("pt-preset-broken", [*PT, "--preset", "{w}/broken.yaml"], []),
    ("pt-preset-list", [*PT, "--preset", "{w}/list.yaml"], []),
    ("pt-preset-badkey", [*PT, "--preset", "{w}/badkey.yaml"], []),
    ("pt-dataset", ["pretrain-teacher", "--arch", "tinycnn", "--dataset", "nope"], []),
    ("pt-device-cuda", [*PT, "--device", "cuda"], []),
    ("pt-device-nope", [*PT, "--device", "nope"], []),
    ("pt-cifar-payload", ["pretrain-teacher", "--arch", "tinycnn", "--dataset", "cifar10", "--data-dir", "{w}/cifar-payload", "--epochs", "1"], []),
    ("pt-cifar-truncated", ["pretrain-teacher", "--arch", "tinycnn", "--dataset", "cifar10", "--data-dir", "{w}/cifar-truncated", "--epochs", "1"], []),
    ("pt-cifar-missing", ["pretrain-teacher", "--arch", "tinycnn", "--dataset", "cifar10", "--data-dir", "{d}", "--epochs", "1"], []),
    ("pt-resume-broken-config", [*PT, "--name", "good", "--resume"], ["trained>runs"]),
    ("pt-runs-dir-file", [*PT, "--runs-dir", "{c}/afile"], ["afile"]),
    # ------------------------------------------------------------------ distill
    ("di-bad-student", ["distill", "--method", "rslad", "--student", "nosuchnet", "--teacher", "{w}/good.safetensors"], []),  # --student defaults to resnet18
    ("di-no-teacher", [*DI], []),
    ("di-teacher-missing", [*DI, "--teacher", "{c}/missing.safetensors"], []),
    ("di-teacher-random", [*DI, "--teacher", "{w}/random.safetensors"], []),
    ("di-teacher-truncated", [*DI, "--teacher", "{w}/truncated.safetensors"], []),
    ("di-teacher-noarch", [*DI, "--teacher", "{w}/noarch.safetensors"], []),
    ("di-teacher-payload", [*DI, "--teacher", "tinycnn:{w}/payload.pt"], []),
    ("di-teacher-arch", [*DI, "--teacher", "nope-arch"], []),
    ("di-wrong-roles", ["distill", "--method", "bmtard", "--student", "tinycnn", "--teacher", "{w}/good.safetensors", *SYN], []),
    ("di-extra-role", [*DI, "--teacher", "{w}/good.safetensors", "--clean-teacher", "{w}/good.safetensors"], []),
    ("di-name-dotdot", [*DI, "--teacher", "{w}/good.safetensors", "--name", "../../escape"], []),
    ("di-set-name", [*DI, "--teacher", "{w}/good.safetensors", "--set", "name=/tmp/x"], []),
    # ------------------------------------------------------------------ attack
    ("at-missing", ["attack", "{c}/missing.safetensors"], []),
    ("at-random", ["attack", "{w}/random.safetensors"], []),
    ("at-truncated", ["attack", "{w}/truncated.safetensors"], []),
    ("at-noarch", ["attack", "{w}/noarch.safetensors"], []),
    ("at-payload", ["attack", "{w}/payload.pt"], []),
    ("at-suite", ["attack", "{w}/good.safetensors", "--suite", "nope"], []),
    ("at-attacks", ["attack", "{w}/good.safetensors", "--attacks", "bogus"], []),
    ("at-attacks-empty", ["attack", "{w}/good.safetensors", "--attacks", ""], []),
    ("at-both", ["attack", "{w}/good.safetensors", "--suite", "quick", "--attacks", "fgsm"], []),
    ("at-eps-big", ["attack", "{w}/good.safetensors", "--eps", "2"], []),
    ("at-eps-slashes", ["attack", "{w}/good.safetensors", "--eps", "8/255/3"], []),
    ("at-eps-text", ["attack", "{w}/good.safetensors", "--eps", "abc"], []),
    ("at-n-neg", ["attack", "{w}/good.safetensors", "--n-examples", "-1"], []),
    ("at-batch-0", ["attack", "{w}/good.safetensors", "--batch-size", "0"], []),
    ("at-set-unknown", ["attack", "{w}/good.safetensors", "--attacks", "aa", "--set", "aa.nope=1"], []),
    ("at-set-no-equals", ["attack", "{w}/good.safetensors", "--set", "bogus"], []),
    ("at-no-runs", ["attack"], []),
    ("at-runs-dir-file", ["attack", "{w}/good.safetensors", "--runs-dir", "{c}/afile", "--n-examples", "8"], ["afile"]),
    # a bad line in the record store is reported before any attack runs
    ("at-store-bad-json", ["attack", "{w}/good.safetensors", "--n-examples", "8"], ["results-bad-json.jsonl>runs/results.jsonl"]),
    ("at-store-accuracy-text", ["attack", "{w}/good.safetensors", "--n-examples", "8"], ["results-accuracy-text.jsonl>runs/results.jsonl"]),
    ("at-store-nan", ["attack", "{w}/good.safetensors", "--n-examples", "8"], ["results-nan.jsonl>runs/results.jsonl"]),
    ("at-store-no-checkpoint", ["attack", "{w}/good.safetensors", "--n-examples", "8"], ["results-no-checkpoint.jsonl>runs/results.jsonl"]),
    # ------------------------------------------------------------------ transfer-attack
    ("tr-no-surrogate", ["transfer-attack", "--target", "{w}/good.safetensors"], []),
    ("tr-surrogate-random", ["transfer-attack", "--surrogate", "{w}/random.safetensors", "--target", "{w}/good.safetensors"], []),
    ("tr-target-missing", ["transfer-attack", "--surrogate", "{w}/good.safetensors", "--target", "{c}/missing.safetensors"], []),
    ("tr-suite", ["transfer-attack", "--surrogate", "{w}/good.safetensors", "--target", "{w}/good.safetensors", "--suite", "nope"], []),
    ("tr-store-nan", ["transfer-attack", "--surrogate", "{w}/good.safetensors", "--target", "{w}/good.safetensors", "--n-examples", "8"],
     ["results-nan.jsonl>runs/results.jsonl"]),
    ("tr-eps", ["transfer-attack", "--surrogate", "{w}/good.safetensors", "--target", "{w}/good.safetensors", "--eps", "-1"], []),
    # ------------------------------------------------------------------ report
    ("re-id", ["report", "nope"], []),
    ("re-table-png", ["report", "table2", "--format", "png"], []),
    ("re-fig-no-out", ["report", "fig2", "--format", "png"], []),
    ("re-format", ["report", "table2", "--format", "docx"], []),
    ("re-plan-n-neg", ["report", "table2", "--plan", "--n-examples", "-5"], []),
    ("re-plan-only", ["report", "table2", "--plan", "--only", "student"], []),
    ("re-plan-preset", ["report", "table2", "--plan", "--preset", "nope"], []),
    ("re-results-not-object", ["report", "table2"], ["results-not-object.jsonl>runs/results.jsonl"]),
    ("re-results-bad-json", ["report", "table2"], ["results-bad-json.jsonl>runs/results.jsonl"]),
    ("re-results-accuracy-text", ["report", "table2"], ["results-accuracy-text.jsonl>runs/results.jsonl"]),
    ("re-results-nan", ["report", "table2", "--format", "json"], ["results-nan.jsonl>runs/results.jsonl"]),
    ("rs-store-nan", ["results", "--format", "json"], ["results-nan.jsonl>runs/results.jsonl"]),
    ("rs-store-accuracy-text", ["results"], ["results-accuracy-text.jsonl>runs/results.jsonl"]),
    ("rs-store-no-checkpoint", ["results", "--format", "csv"], ["results-no-checkpoint.jsonl>runs/results.jsonl"]),
    ("rs-store-not-object", ["results"], ["results-not-object.jsonl>runs/results.jsonl"]),
    ("rs-format", ["results", "--format", "docx"], []),
    ("re-out-dir", ["report", "table2", "--format", "markdown", "--out", "{c}"], []),
    # ------------------------------------------------------------------ landscape
    ("la-missing", ["landscape", "{c}/missing.safetensors"], []),
    ("la-random", ["landscape", "{w}/random.safetensors", "--out", "{c}/l.png"], []),
    ("la-out-dir", ["landscape", "{w}/good.safetensors", "--out", "{c}"], []),
    ("la-out-suffix", ["landscape", "{w}/good.safetensors", "--out", "{c}/l.txt"], []),
    ("la-bn-bias", ["landscape", "{w}/good.safetensors", "--bn-bias", "nope", "--out", "{c}/l.png"], []),
    ("la-points", ["landscape", "{w}/good.safetensors", "--points", "0", "--out", "{c}/l.png"], []),
    ("la-directions", ["landscape", "{w}/good.safetensors", "--directions", "0", "--out", "{c}/l.png"], []),
    ("la-attack", ["landscape", "{w}/good.safetensors", "--attack", "bogus", "--out", "{c}/l.png"], []),
    ("la-eps", ["landscape", "{w}/good.safetensors", "--eps", "9", "--out", "{c}/l.png"], []),
]


def test_there_are_enough_cases_across_all_commands():
    commands = {argv[0] for _, argv, _ in CASES}
    assert len(CASES) >= 60
    assert commands == {"pretrain-teacher", "distill", "attack", "transfer-attack", "report", "landscape", "results"}


@pytest.mark.parametrize("case,argv,files", CASES, ids=[c[0] for c in CASES])
def test_malformed_invocation(case, argv, files, world, tmp_path, monkeypatch, capsys):
    deep = tmp_path / "a" / "b" / "c"  # deep enough that ../../../ stays inside tmp_path, where the snapshot sees it
    runs, data = deep / "runs", deep / "data"
    runs.mkdir(parents=True)
    data.mkdir()
    for item in files:
        src, _, dst = item.partition(">")
        target = deep / (dst or src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if (world / src).is_dir():
            shutil.copytree(world / src, target, dirs_exist_ok=True)
        elif (world / src).exists():
            shutil.copy(world / src, target)
        else:
            target.write_text("a file where a folder should be\n")
    monkeypatch.chdir(deep)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(data))
    args = [a.replace("{w}", str(world)).replace("{c}", str(deep)).replace("{d}", str(data)) for a in argv]
    before = tree(tmp_path)
    world_before = tree(world)
    capsys.readouterr()
    refused_line(case, args, capsys)
    assert tree(tmp_path) == before, f"{case}: the command created or changed files"
    assert tree(world) == world_before
    assert not (deep / "MARKER").exists() and not Path("MARKER").exists(), f"{case}: a data file ran code"

