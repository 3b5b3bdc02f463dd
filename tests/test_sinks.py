"""--log tensorboard / wandb: every committed epoch's metrics reach the sink; missing packages are one line."""
from __future__ import annotations

import json
import sys
import types

import pytest

from advkd.cli import main

BASE = ["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--dataset", "synthetic", "--epochs", "2",
        "--set", "train_subset=64", "--set", "eval_examples=16"]


class FakeWriter:
    instances: list = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_gets_every_epochs_row(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    FakeWriter.instances.clear()
    assert main([*BASE, "--log", "tensorboard", "--runs-dir", str(tmp_path / "runs")]) == 0
    (writer,) = FakeWriter.instances
    (run,) = (tmp_path / "runs" / "pretrain-teacher" / "synthetic").iterdir()
    assert writer.log_dir == str(run / "tensorboard") and writer.closed
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {(k, step): v for k, v, step in writer.scalars}
    for row in rows:
        for key in ("train_loss", "train_acc", "clean_acc", "lr"):
            assert logged[(key, row["epoch"])] == pytest.approx(row[key])
    assert {step for _, _, step in writer.scalars} == {1, 2}


def test_wandb_gets_the_same_rows_under_a_stable_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"] += 1

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert main([*BASE, "--log", "wandb", "--runs-dir", str(tmp_path / "runs")]) == 0
    (init,) = calls["init"]
    assert init["project"] == "advkd" and init["name"].startswith("tinycnn-natural") and init["resume"] == "allow"
    assert [step for step, _ in calls["log"]] == [1, 2] and "clean_acc" in calls["log"][0][1] and calls["finish"] == 1


def test_a_missing_sink_package_or_name_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main([*BASE, "--log", "wandb", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--log wandb needs the optional wandb package: pip install 'advkd[wandb]'" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert main([*BASE, "--log", "mlflow", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "one of tensorboard, wandb" in capsys.readouterr().err
