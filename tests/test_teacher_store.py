"""The teacher store picks the teacher of the student's own scale, and only a finished one: a mini
student never gets a small run's teacher because both train the same stand-in architecture, nor
the best.safetensors of a teacher still training."""
from __future__ import annotations

import pytest
import yaml

from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.training.teachers import resolve_teacher

FAST = ["--arch", "tinycnn", "--method", "trades", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "32", "--n-examples", "16",
        "--batch-size", "16", "--set", "method.steps=1"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    assert main(["pretrain-teacher", *FAST, "--preset", "mini", "--name", "t-mini"]) == 0
    assert main(["pretrain-teacher", *FAST, "--preset", "small", "--name", "t-small"]) == 0  # newer, same architecture
    return tmp_path / "runs"


def _resolve(store, preset):
    return resolve_teacher("tinycnn", role="teacher", dataset="synthetic", num_classes=10, runs_dir=store, preset=preset)


def test_a_student_gets_the_teacher_of_its_own_reduced_scale(store):
    assert _resolve(store, "mini").source.endswith("t-mini/best.safetensors")
    assert _resolve(store, "small").source.endswith("t-small/best.safetensors")
    assert _resolve(store, "").source.endswith("t-small/best.safetensors")  # no preset: the newest, as before


def test_an_unfinished_teacher_is_not_used(store):
    config = store / "pretrain-teacher" / "synthetic" / "t-mini" / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["epochs"] = 3  # one epoch of three done: a run still training (or stopped) looks like this
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(AdvkdError, match=r"has not finished training \(.*t-mini\); let it finish"):
        _resolve(store, "mini")
