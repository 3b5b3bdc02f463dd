"""Checkpoint files: round trip, metadata, atomic writes, clear errors, foreign weights."""
from __future__ import annotations

import sys

import pytest
import torch

from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_text
from advkd.models import build_model
from advkd.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint, strip_prefixes
from advkd.training.teachers import resolve_teacher

META = {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "normalize": "none", "method": "trades", "teachers": {}, "metrics": {"clean_acc": 50.0}, "epoch": "3"}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("tinycnn")
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, META)
    loaded, meta = load_checkpoint(path)
    assert meta["arch"] == "tinycnn" and meta["num_classes"] == 10 and meta["epoch"] == 3
    assert meta["metrics"] == {"clean_acc": 50.0} and meta["format"] == "pt"
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_normalisation_layer_is_recorded_and_restored(tmp_path):
    model = build_model("tinycnn", normalize="cifar10")
    save_checkpoint(tmp_path / "n.safetensors", model, {**META, "normalize": "cifar10"})
    loaded, _ = load_checkpoint(tmp_path / "n.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), loaded(x))


def test_expectations_and_corruption_are_user_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("tinycnn"), META)
    with pytest.raises(AdvkdError, match="dataset='synthetic' but 'cifar10'"):
        load_checkpoint(path, expect={"dataset": "cifar10"})
    with pytest.raises(AdvkdError, match="num_classes=10 but 100"):
        load_checkpoint(path, expect={"num_classes": 100})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdvkdError, match="corrupt"):
        read_metadata(path)
    with pytest.raises(AdvkdError, match="not found"):
        read_metadata(tmp_path / "nope.safetensors")


def test_weights_that_do_not_fit_the_arch_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("tinycnn"), {**META, "arch": "tinymlp"})
    with pytest.raises(AdvkdError, match="do not fit the architecture"):
        load_checkpoint(path)


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from advkd.core.files import atomic_file

    with pytest.raises(Boom):
        with atomic_file(target) as f:
            f.write(b"half")
            f.flush()
            raise Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_foreign_pt_weights_with_prefixes_load_strictly(tmp_path):
    torch.manual_seed(1)
    model = build_model("tinycnn")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": state}, pt)
    teacher = resolve_teacher(f"tinycnn:{pt}", role="teacher", dataset="synthetic", num_classes=10, runs_dir=tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(teacher.model(x), model.eval()(x))
    assert teacher.sha256 and teacher.arch == "tinycnn"
    with pytest.raises(AdvkdError, match="do not fit"):
        resolve_teacher(f"tinymlp:{pt}", role="teacher", dataset="synthetic", num_classes=10, runs_dir=tmp_path)
    with pytest.raises(AdvkdError, match="name its architecture"):
        resolve_teacher(str(pt), role="teacher", dataset="synthetic", num_classes=10, runs_dir=tmp_path)
    assert list(strip_prefixes({"module._orig_mod.a": 1}).keys()) == ["a"]


def test_robustbench_is_optional(monkeypatch):
    """Without the package (hidden here, whether installed or not) a robustbench: teacher is one clear line."""
    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    with pytest.raises(AdvkdError, match=r"pip install 'advkd\[robustbench\]'"):
        resolve_teacher("robustbench:Chen2021LTD_WRN34_20", role="teacher", dataset="cifar10", num_classes=10, runs_dir=".")
