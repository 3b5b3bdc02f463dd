"""examples/plugin, installed as a user installs it (pip, into its own folder on PYTHONPATH), works
through the CLI: listed with its package, trained with --set method.*, attacked with its own
attack, and every record names the package that made it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin"
FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32", "--set", "method.steps=2"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example pip-installed (no dependencies: advkd is this checkout) into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, root / "src")
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(root / "site"),
                          str(root / "src")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"pip install of the example failed: {out.stderr[-2000:]}")
    return root / "site"


def advkd(site: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "ADVKD_RUNS_DIR": str(tmp / "runs"), "ADVKD_DATA_DIR": str(tmp / "data"), "ADVKD_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "advkd", *args], capture_output=True, text=True, timeout=600, env=env)


def test_the_example_plugin_trains_attacks_and_records_its_origin(site, tmp_path):
    out = advkd(site, tmp_path, "methods", "--format", "json")
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["confkd"]["from"] == "advkd-confkd 0.1.0 (confkd.method:ConfKD)"
    out = advkd(site, tmp_path, "attacks", "--format", "json")
    assert {r["name"]: r["from"] for r in json.loads(out.stdout)}["fgsm-rs"] == "advkd-confkd 0.1.0 (confkd.attack:RandomStartFGSM)"
    assert advkd(site, tmp_path, "pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST).returncode == 0
    out = advkd(site, tmp_path, "distill", "--method", "confkd", "--student", "tinycnn", "--teacher", "tinycnn", *FAST, "--set", "method.gamma=2")
    assert out.returncode == 0, out.stderr
    run = next((tmp_path / "runs" / "distill" / "synthetic").glob("tinycnn-confkd-tinycnn-*"))
    assert "gamma2" in run.name
    out = advkd(site, tmp_path, "attack", str(run / "best.safetensors"), "--attacks", "clean,fgsm-rs,pgd10", "--n-examples", "32",
                "--set", "fgsm-rs.alpha=1", "--format", "json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "runs" / "results.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["method"] == "confkd"]
    assert [r["attack"] for r in mine] == ["clean", "fgsm-rs", "pgd10"]
    assert all(r["method_origin"] == {"spec": "confkd.method:ConfKD", "distribution": "advkd-confkd", "version": "0.1.0"} for r in mine)
    assert next(r for r in mine if r["attack"] == "fgsm-rs")["params"] == {"alpha": 1.0}
    bad = advkd(site, tmp_path, "distill", "--method", "confkd", "--student", "tinycnn", "--teacher", "tinycnn", *FAST, "--set", "method.gamma=high")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "gamma" in bad.stderr and "Traceback" not in bad.stderr


def test_a_built_in_run_never_imports_the_plugin(site, tmp_path):
    code = ("import sys\nfrom advkd.methods import METHODS\nfrom advkd.attacks import ATTACKS\n"
            "METHODS.canonical('rslad'); ATTACKS.canonical('pgd10')\nprint('confkd' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert out.stdout.strip() == "False"


def test_report_with_the_plugin_method_shows_its_row_and_plans_it(site, tmp_path):
    (tmp_path / "runs").mkdir()
    record = {"checkpoint": "runs/distill/cifar10/resnet18-confkd-wrn34-10-mini-s0/best.safetensors", "sha256": "sha-c", "dataset": "cifar10",
              "arch": "resnet8", "paper_arch": "resnet18", "method": "confkd", "teachers": {"teacher": {"arch": "resnet14", "paper_arch": "wrn34-10",
              "sha256": "sha-t", "method": "trades"}}, "preset": "mini", "scale": "mini", "epoch": 4, "attack": "clean", "kind": "clean",
              "eps": None, "eps_value": None, "threat_model": "none", "n_examples": 1000, "accuracy": 33.3, "method_params": {}, "train_eps": "8/255",
              "run": "resnet18-confkd-wrn34-10-mini-s0", "seed": 0, "time": "2026-01-01T00:00:00+0000", "sanity_flags": []}
    (tmp_path / "runs" / "results.jsonl").write_text(json.dumps(record) + "\n")
    out = advkd(site, tmp_path, "report", "table2", "--with", "confkd", "--format", "markdown")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "confkd⁺" in line)
    assert "**33.30**ᵐ" in row
    plan = advkd(site, tmp_path, "report", "table2", "--plan", "--with", "confkd", "--no-estimate", "--only", "student=resnet18",
                 "--only", "teacher=wrn34-10")
    assert plan.returncode == 0, plan.stderr
    assert any(line.startswith("advkd distill --method confkd --student resnet18") for line in plan.stdout.splitlines())
