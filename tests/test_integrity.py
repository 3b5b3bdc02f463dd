"""Issue 24's classes 3, 5, 6 and 7, each fixed at one place by one rule and tried here as a
battery: names and numbers checked before work (UTF-8 text, float32 range), OS errors that a
library wraps come out as one line, no write leaves the runs dir through a symlink, a resume on
another thread count / device / torch says it is not bit-exact, and a failing command leaves no
folder behind. Every refused case: exit 2, one stderr line, no traceback, nothing changed."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from test_bad_inputs import PT, refused_line, tree

from advkd.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

BAD_BYTES = "caf\udce9"  # b"caf\xe9" (Latin-1) as a Linux argv reaches Python: a lone surrogate


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A tiny trained checkpoint the attack cases copy."""
    root = tmp_path_factory.mktemp("integrity")
    runs = root / "runs"
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    return runs / "pretrain-teacher" / "synthetic" / "good" / "best.safetensors"


def refused(argv: list[str], root: Path, capsys, *, outside: Path | None = None) -> str:
    """Run ``argv``; assert the error contract and that ``root`` (and ``outside``) did not change."""
    before, before_out = tree(root), tree(outside) if outside else None
    capsys.readouterr()
    line = refused_line(" ".join(argv[:3]), argv, capsys)
    assert tree(root) == before
    if outside is not None:
        assert tree(outside) == before_out
    return line


# ----------------------------------------------------------------------------- class 3: checked before work

BEFORE_WORK = {
    "name-not-utf8": ([*PT, "--name", BAD_BYTES], "not valid UTF-8"),
    "runs-dir-not-utf8": ([*PT, "--runs-dir", "{c}/" + BAD_BYTES], "not valid UTF-8"),
    "preset-path-not-utf8": ([*PT, "--preset", "{c}/" + BAD_BYTES + ".yaml"], "not valid UTF-8"),
    "set-value-not-utf8": ([*PT, "--set", f"eval_eps={BAD_BYTES}"], "not valid UTF-8"),
    "lr-overflows-float32": ([*PT, "--lr", "1e39"], "outside float32's range"),
    "wd-overflows-float32": ([*PT, "--set", "weight_decay=3.5e38"], "outside float32's range"),
    "lr-underflows-float32": ([*PT, "--set", "lr=1e-50"], "outside float32's range"),
    "adam-eps-underflows": ([*PT, "--set", "optimizer=adamw", "--set", "adam_eps=1e-46"], "outside float32's range"),
}


@pytest.mark.parametrize("case", BEFORE_WORK)
def test_names_and_numbers_are_checked_before_any_work(case, tmp_path, monkeypatch, capsys):
    argv, message = BEFORE_WORK[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    line = refused([a.replace("{c}", str(tmp_path)) for a in argv], tmp_path, capsys)
    assert message in line


def test_a_path_in_the_environment_must_be_utf8_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / BAD_BYTES))
    assert "$ADVKD_RUNS_DIR" in refused(PT, tmp_path, capsys)


def _full_disk(f) -> None:
    f.write(b"part of the file")
    raise OSError(28, "No space left on device")  # what the kernel says when the write finds no space


@pytest.mark.parametrize("name", ["last.safetensors", "resume.safetensors"])
def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_naming_the_file(name, tmp_path, monkeypatch, capsys):
    from advkd.core import files

    real = files.save_tensors

    def save(path, tensors, metadata=None, *, size=None):
        if Path(path).name != name:
            return real(path, tensors, metadata, size=size)
        return files.atomic_write_with(path, _full_disk, size=size)

    monkeypatch.setattr(files, "save_tensors", save)
    capsys.readouterr()
    assert main([*PT, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("advkd: error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and name in errors[0] and "Traceback" not in err
    assert err.splitlines()[-1] == errors[0]  # the run's log lines, then the one error
    assert not list((tmp_path / "runs").rglob("*.tmp"))  # the atomic write left no temp behind


# ----------------------------------------------------------------------------- class 5: nothing written through a link

def _link(at: Path, to: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(to, at)


LINKS = {
    # case: (link inside the runs dir, what it points to ("dir" or "file"), argv)
    "run-dir": ("pretrain-teacher/synthetic/x", "dir", [*PT, "--name", "x"]),
    "kind-dir": ("pretrain-teacher", "dir", [*PT, "--name", "y"]),
    "dataset-dir": ("pretrain-teacher/synthetic", "dir", [*PT, "--name", "z"]),
    "results-file": ("results.jsonl", "file", ["attack", "{good}", "--attacks", "fgsm", "--n-examples", "8"]),
    "attack-state": ("attack-state", "dir", ["attack", "{good}", "--attacks", "fgsm", "--n-examples", "8"]),
    "results-repair": ("results.jsonl", "file", ["results", "--repair"]),
    "landscape-default-out": ("landscape", "dir", ["landscape", "{good}", "--n-examples", "8", "--points", "3"]),
}


@pytest.mark.parametrize("case", LINKS)
def test_no_write_leaves_the_runs_dir_through_a_symlink(case, good, tmp_path, monkeypatch, capsys):
    where, kind, argv = LINKS[case]
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    target = outside / "target"
    if kind == "dir":
        target.mkdir()
    else:
        target.write_text('{"checkpoint": "x", "attack": "clean", "accuracy": 50.0}\n')
    _link(runs / where, target)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    line = refused([a.replace("{good}", str(good)) for a in argv], runs, capsys, outside=outside)
    assert "is a symlink" in line and "below the runs dir" in line


def test_a_runs_dir_that_is_itself_a_link_is_the_users_choice(good, tmp_path, monkeypatch):
    real = tmp_path / "big-disk" / "runs"
    real.mkdir(parents=True)
    _link(tmp_path / "runs", real)
    assert main(["attack", str(good), "--attacks", "fgsm", "--n-examples", "8", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert (real / "results.jsonl").is_file()


# ----------------------------------------------------------------------------- class 6: exactness lost is said

@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("resume") / "runs"
    assert main([*PT, "--runs-dir", str(runs), "--name", "r"]) == 0
    return runs


ENV_EDITS = {
    "threads": ({"cpu_threads": 7}, ["CPU threads 7", "--threads 7"]),
    "torch": ({"versions": {"torch": "2.4.0"}}, ["torch 2.4.0"]),
    "device-type": ({"device": "cuda:0"}, ["device type cuda"]),
    "all-three": ({"cpu_threads": 7, "device": "cuda:1", "versions": {"torch": "2.4.0"}}, ["CPU threads 7", "device type cuda", "torch 2.4.0"]),
    "same": ({}, []),
    "no-env-file": (None, []),
}


@pytest.mark.parametrize("case", ENV_EDITS)
def test_a_resume_on_another_machine_setup_says_it_is_not_bit_exact(case, one_epoch, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(one_epoch, runs)
    env_file = runs / "pretrain-teacher" / "synthetic" / "r" / "env.json"
    edit, expected = ENV_EDITS[case]
    if edit is None:
        env_file.unlink()
    else:
        env = json.loads(env_file.read_text())
        env["cpu_threads"] = torch.get_num_threads()  # the fixture's run may have had another count than this test
        env.update({k: ({**env.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in edit.items()})
        env_file.write_text(json.dumps(env))
    capsys.readouterr()
    assert main([*PT, "--runs-dir", str(runs), "--name", "r", "--epochs", "2", "--resume"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "not equal an uninterrupted run" in line]
    if expected:
        assert len(warning) == 1 and all(e in warning[0] for e in expected), warning
    else:
        assert warning == []


# ----------------------------------------------------------------------------- class 7: a failure leaves no trace

@pytest.mark.parametrize("spec,extra", [
    ("robustbench:Nope", []),
    ("robustbench:Standard", ["--threat-model", "L2"]),
    ("robustbench:Wong2020Fast", ["--dataset", "cifar100"]),
    ("robustbench:Carmon2019Unlabeled", []),
    ("robustbench:Nope2", ["--threat-model", "corruptions"]),
])
def test_a_failed_robustbench_load_leaves_no_folder(spec, extra, tmp_path, monkeypatch, capsys):
    from advkd.evaluation import sources

    def offline_loader(*, model_name, model_dir, dataset, threat_model):
        (Path(model_dir) / dataset / threat_model).mkdir(parents=True)  # what RobustBench does before it downloads
        raise ConnectionError("offline")

    monkeypatch.setattr(sources, "_robustbench_loader", lambda spec: offline_loader)
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVKD_DATA_DIR", str(data))
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    line = refused(["attack", spec, "--attacks", "fgsm", "--n-examples", "4", *extra], tmp_path, capsys)
    assert "robustbench could not load" in line or "threat" in line
    assert not (data / "robustbench-models").exists()


@pytest.mark.parametrize("warning", [UserWarning, FutureWarning, DeprecationWarning, RuntimeWarning, "two"])
def test_a_refused_robustbench_load_says_one_line_without_the_librarys_warnings(warning, tmp_path, monkeypatch, capsys):
    import warnings

    from advkd.evaluation import sources

    def warns_then_refuses(*, model_name, model_dir, dataset, threat_model):
        for category in ((UserWarning, FutureWarning) if warning == "two" else (warning,)):
            warnings.warn("the payload was pickled with protocol 4; weights_only may fail", category, stacklevel=2)
        raise RuntimeError("Weights only load failed: unsupported pickle protocol 4")

    monkeypatch.setattr(sources, "_robustbench_loader", lambda spec: warns_then_refuses)
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVKD_DATA_DIR", str(data))
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as a user whose filters show everything, printed as Python prints them
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
        line = refused(["attack", "robustbench:Standard", "--attacks", "fgsm", "--n-examples", "4"], tmp_path, capsys)
    assert "robustbench could not load Standard" in line and "protocol 4" in line
