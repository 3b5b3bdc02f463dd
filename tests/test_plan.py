"""`advkd report ID --plan`: the printed commands, run through a shell, fill the cells they cover."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advkd.cli import main
from advkd.evaluation.records import read_records
from advkd.report import build_table, canonical_id

TINY_PRESET = """
description: test scale - every architecture is tinycnn, one tiny epoch
scale: mini
arch_map: {resnet18: tinycnn, resnet56: tinycnn, wrn34-10: tinycnn}
train: {epochs: 1, batch_size: 16, train_subset: 32, eval_examples: 16, eval_batch_size: 16, milestones: [], select: last}
rules:
  - when: {dataset: cifar10}
    teachers: {clean_teacher: resnet56, robust_teacher: wrn34-10, teacher: wrn34-10}
"""


def fake_cifar10(root: Path, n: int = 40) -> None:
    """A tiny CIFAR-10 folder in the pickle layout (random images), so the plan's cifar10 commands run."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n).tolist())}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_plan_for_an_empty_runs_dir_runs_and_fills_its_cells(tmp_path, capsys, monkeypatch):
    fake_cifar10(tmp_path / "data")
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    runs = tmp_path / "runs"
    assert main(["report", "bmtard-table10", "--plan", "--preset", str(preset), "--runs-dir", str(runs)]) == 0
    plan = capsys.readouterr().out
    commands = [line for line in plan.splitlines() if line and not line.startswith("#")]
    assert commands[0].startswith("advkd pretrain-teacher") and commands[-1].startswith("advkd attack")
    assert sum(c.startswith("advkd distill") for c in commands) == 2  # bmtard and lmtn
    env = {**os.environ, "ADVKD_DATA_DIR": str(tmp_path / "data"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # the suite's AutoAttack is slow even on tinycnn: keep the plan's commands, shrink the evaluation
    script = "\n".join(c + (" --n-examples 8" if c.startswith("advkd attack") else "") for c in commands)
    proc = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = build_table(canonical_id("bmtard-table10"), read_records(runs / "results.jsonl"))
    cells = list(table.iter_cells())
    assert cells and all(c.ours is not None for c in cells), [c.csv.method + c.csv.attack for c in cells if c.ours is None]
    # nothing left to do: a second plan lists no commands
    assert main(["report", "bmtard-table10", "--plan", "--preset", str(preset), "--runs-dir", str(runs)]) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    assert again == []


@pytest.mark.parametrize("table", ["table2", "table4", "table5", "bmtard-table3", "bmtard-table5", "bmtard-table7", "bmtard-table11"])
def test_plans_are_ordered_and_name_real_checkpoints(tmp_path, capsys, table):
    assert main(["report", table, "--plan", "--preset", "mini", "--runs-dir", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    verbs = ["pretrain-teacher", "distill", "attack", "transfer-attack"]
    order = [verbs.index(line.split()[1]) for line in lines]
    assert order == sorted(order), "teachers, then students, then attacks, then transfers"
    assert len(set(lines)) == len(lines), "no duplicate commands"
    for line in lines:  # every checkpoint an attack names is produced by an earlier line
        words = line.split()
        for path in [w for w in words if w.endswith("best.safetensors")]:
            run = path.rsplit("/", 2)[1]
            assert any(run in _expected_name(earlier) for earlier in lines[: lines.index(line)]) or words[1] in ("pretrain-teacher", "distill"), (line, run)


def _expected_name(line: str) -> str:
    """The run name a pretrain-teacher / distill line creates, as the CLI's default names it."""
    from advkd.core.runs import default_name
    from advkd.training.config import TrainConfig, resolve_config

    w = line.split()
    if w[1] not in ("pretrain-teacher", "distill"):
        return ""
    opts = dict(zip(w[2::2], w[3::2]))
    arch = opts.get("--arch") or opts["--student"]
    sets = [v for k, v in zip(w[2::2], w[3::2]) if k == "--set"]
    cfg = resolve_config(TrainConfig(), preset=opts["--preset"], set_items=sets, flags={"method": opts["--method"], "arch": arch, "dataset": opts["--dataset"]})
    teachers = {r: Path(opts[f"--{r.replace('_', '-')}"]).parent.name.split("-")[0] for r in ("teacher", "clean_teacher", "robust_teacher") if f"--{r.replace('_', '-')}" in opts}
    teachers = {r: "-".join(Path(opts[f"--{r.replace('_', '-')}"]).parent.name.split("-")[:2]) if a.startswith("wrn") else a for r, a in teachers.items()}
    return default_name(cfg, teachers)


@pytest.mark.slow  # ~90 s: eight trainings and AutoAttacks through bash (make test-slow)
def test_fig2_plan_sweeps_the_training_eps_and_fills_the_figure(tmp_path, capsys, monkeypatch):
    import json
    import shlex

    fake_cifar10(tmp_path / "data")
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    runs = tmp_path / "runs"
    assert main(["report", "fig2", "--plan", "--preset", "mini", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    full = [line for line in out if line and not line.startswith("#")]
    distills = [c for c in full if c.startswith("advkd distill")]
    # at mini both panels' teachers are one ResNet-14: one sweep fills both, and the plan says so
    assert len(distills) == 4 and not any("wrn34-20" in c for c in full)
    assert any(line.startswith("# wrn34-10-trades-mini-s0 also fills the cells of wrn34-20-trades-mini-s0") for line in out)
    assert sum("method.eps=32/255" in c and "method.step_size=8/255" in c for c in distills) == 1
    assert sum("method.eps" not in c for c in distills) == 1  # eps 8/255 is the main-table run itself
    assert main(["report", "fig2", "--plan", "--preset", "paper", "--runs-dir", str(runs)]) == 0
    paper = [c for c in capsys.readouterr().out.splitlines() if c.startswith("advkd distill")]
    assert len(paper) == 8 and sum("--teacher" in c and "wrn34-20" in c for c in paper) == 4  # both panels at paper scale
    assert all("--suite aa" in c for c in full if c.startswith("advkd attack"))

    args = ["report", "fig2", "--plan", "--preset", str(preset), "--runs-dir", str(runs), "--only", "teacher=wrn34-10", "--n-examples", "8"]
    assert main(args) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 1 + 4 + 4
    for command in commands:  # in-process (the table plan above goes through bash)
        assert main(shlex.split(command)[1:]) == 0, command
    out = tmp_path / "fig2.png"
    assert main(["report", "fig2", "--format", "png", "--out", str(out), "--runs-dir", str(runs)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["robust_attack"] == "aa" and data["missing"] == []
    assert [s["x"] for s in data["panels"][1]["series"]] == [[8, 16, 24, 32]]
    capsys.readouterr()
    assert main(args) == 0  # everything done: nothing left to run
    assert [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")] == []


def test_n_examples_zero_reaches_the_attacks_as_the_whole_test_set(tmp_path, capsys):
    assert main(["report", "table2", "--plan", "--preset", "mini", "--n-examples", "0", "--no-estimate", "--runs-dir", str(tmp_path)]) == 0
    attacks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("advkd attack")]
    assert attacks and all("--n-examples 0" in line for line in attacks)  # 0 = all, not "the command's default"


def test_an_attack_counts_as_done_only_on_the_file_it_attacked(tmp_path):
    """A resumed run that found a new best (or a run trained again) is attacked again: the plan
    matches records to the checkpoint's sha256, not to its path alone."""
    import json

    from advkd.core.files import sha256_file
    from advkd.report.plan import Planner

    runs = tmp_path / "runs"
    ckpt = runs / "distill" / "cifar10" / "r" / "best.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"the best of epoch 6")
    attacked = sha256_file(ckpt)
    (runs / "results.jsonl").write_text(json.dumps({"checkpoint": str(ckpt), "attack": "pgd10", "accuracy": 30.0, "sha256": attacked}) + "\n")
    planner = Planner("adaad", "mini", runs)
    assert planner._attacked(ckpt, "pgd10", sha256_file(ckpt))
    assert not planner._attacked(ckpt, "fgsm", sha256_file(ckpt))
    planner.attack(ckpt, "quick")
    [job] = planner._attack_jobs()
    assert "--attacks fgsm" in job.command  # pgd10 of this very file is recorded
    ckpt.write_bytes(b"the best of epoch 7")  # the run went on and found a better epoch
    assert not planner._attacked(ckpt, "pgd10", sha256_file(ckpt))
    [job] = planner._attack_jobs()
    assert "--suite quick" in job.command  # both attacks again, on the new file


def test_a_plan_prices_on_the_device_given_after_report(tmp_path, capsys, monkeypatch):
    """`report --plan --device X` prices on X (it used to price on `auto` whatever was given)."""
    from advkd.report import budget

    seen = []
    fake = budget.time_network
    monkeypatch.setattr(budget, "time_network", lambda arch, dataset, device, paths=None: seen.append(device.type) or fake(arch, dataset, device, paths))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    args = ["report", "table2", "--plan", "--preset", "mini", "--runs-dir", str(tmp_path / "runs"), "--only", "method=pgd-at"]
    assert main([*args, "--device", "cuda"]) == 2
    assert "--device cuda requested but CUDA is not available" in capsys.readouterr().err and seen == []
    assert main([*args, "--device", "cpu"]) == 0
    assert "on this CPU" in capsys.readouterr().out.splitlines()[0] and set(seen) == {"cpu"}
