"""Every command reads the same model forms: advkd checkpoints, ARCH:weights.pt, robustbench:<id>
(offline, through RobustBench's own local-file layout)."""
from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from test_plan import fake_cifar10

from advkd.cli import main
from advkd.core.files import sha256_file
from advkd.models import build_model


def _records(runs):
    return [json.loads(line) for line in (runs / "results.jsonl").read_text().splitlines()]


def test_attack_and_landscape_take_foreign_weights_for_a_registry_arch(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in build_model("tinycnn", num_classes=10).state_dict().items()}}, weights)
    runs = tmp_path / "runs"
    spec = f"tinycnn:{weights}"
    assert main(["attack", spec, "--dataset", "synthetic", "--attacks", "fgsm", "--n-examples", "16", "--runs-dir", str(runs)]) == 0
    rec = {r["attack"]: r for r in _records(runs)}["fgsm"]
    assert rec["checkpoint"] == spec and rec["sha256"] == sha256_file(weights) and (rec["arch"], rec["method"], rec["dataset"]) == ("tinycnn", "foreign", "synthetic")
    out = tmp_path / "land.png"
    assert main(["landscape", spec, "--dataset", "synthetic", "--directions", "1", "--points", "3", "--n-examples", "8", "--attack", "clean",
                 "--out", str(out), "--runs-dir", str(runs)]) == 0
    assert out.is_file()
    assert main(["attack", f"tinymlp:{weights}", "--dataset", "synthetic", "--runs-dir", str(runs)]) == 2  # keys do not match: one line


def test_attack_a_robustbench_model_offline_from_its_local_file(tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("robustbench") is None:  # not importorskip: importing it before advkd's loader fails (no autoattack)
        pytest.skip("the robustbench extra is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from advkd.evaluation.sources import _robustbench_loader

        _robustbench_loader("robustbench:Standard")  # installs the autoattack alias RobustBench imports
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    fake_cifar10(tmp_path / "data")
    models = tmp_path / "zoo"
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.L2]["Standard"]["model"]()
    path = models / "cifar10" / "L2" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("ADVKD_MODEL_DIR", str(models))
    runs = tmp_path / "runs"
    args = ["attack", "robustbench:Standard", "--threat-model", "L2", "--attacks", "fgsm", "--n-examples", "4", "--batch-size", "4",
            "--data-dir", str(tmp_path / "data"), "--runs-dir", str(runs)]
    assert main(args) == 0, capsys.readouterr().err
    rec = {r["attack"]: r for r in _records(runs)}["fgsm"]
    assert rec["checkpoint"] == "robustbench:Standard" and rec["sha256"] == sha256_file(path) and rec["method"] == "robustbench"
    assert main([*args[:3], "Linf", *args[4:]]) == 2  # Linf/Standard is not on disk and there is no network: one line
    assert "robustbench could not load Standard (cifar10, Linf)" in capsys.readouterr().err
