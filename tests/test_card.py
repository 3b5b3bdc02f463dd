"""The product card's three commands run as written (issue 14 item 1), with tiny stand-ins
injected through ADVKD_PRESET_DIR (the commands themselves are unchanged)."""
from __future__ import annotations

import shlex

import pytest
from test_plan import fake_cifar10

from advkd.cli import main

TINY = """
description: tiny stand-in of {name} for the card test
scale: paper
paper: {paper}
arch_map: {{resnet18: tinycnn, resnet56: tinycnn, wrn34-10: tinycnn}}
train: {{epochs: 2, batch_size: 16, train_subset: 32, eval_examples: 16, eval_batch_size: 16, milestones: [], select: last}}
methods:
  trades: {{params: {{steps: 2}}}}
  pgd-at: {{params: {{steps: 2}}}}
  bmtard: {{params: {{steps: 2}}}}
rules:
  - when: {{dataset: cifar10}}
    teachers: {{clean_teacher: resnet56, robust_teacher: wrn34-10, teacher: wrn34-10}}
"""
CARD = [
    "advkd distill --method bmtard --clean-teacher rn56 --robust-teacher wrn34-10",
    "advkd attack --suite aa",
    "advkd report table2",
]


@pytest.fixture()
def card_env(tmp_path, monkeypatch):
    fake_cifar10(tmp_path / "data")
    presets = tmp_path / "presets"
    presets.mkdir()
    for name in ("bmtard-paper", "bmtard-teacher", "adaad-paper"):
        (presets / f"{name}.yaml").write_text(TINY.format(name=name, paper=name.split("-")[0]))
    monkeypatch.setenv("ADVKD_PRESET_DIR", str(presets))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def test_the_cards_commands_run_as_written(card_env, capsys):
    distill = shlex.split(CARD[0])[1:]
    # before any teacher exists: one line naming both teachers and the commands that make them at this scale
    assert main(distill) == 2
    err = capsys.readouterr().err
    assert "teacher at preset bmtard-paper (tinycnn standing in) for cifar10" in err  # no --preset: the B-MTARD recipe, and the error says so
    hint = err.split("create them with: ", 1)[1].split(" (paper scale")[0]
    commands = hint.split(" && ")
    assert commands == ["advkd pretrain-teacher --arch resnet56 --method natural --dataset cifar10 --preset bmtard-teacher",
                        "advkd pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset bmtard-teacher"]
    for command in commands:  # following the hint works
        assert main(shlex.split(command)[1:]) == 0
    capsys.readouterr()
    assert main(distill) == 0  # the card's command, as written: student resnet18, CIFAR-10, the B-MTARD recipe
    out = capsys.readouterr()
    assert "distill bmtard: tinycnn standing in for resnet18 on cifar10 (preset bmtard-paper" in out.err
    assert "this run: about" in out.err  # the whole run's estimate, early
    ckpt = card_env / "runs" / "distill" / "cifar10" / "resnet18-bmtard-resnet56-wrn34-10-bmtard-paper-s0" / "best.safetensors"
    assert ckpt.is_file()
    assert main(shlex.split(CARD[1])[1:]) == 0  # the newest run's best checkpoint
    out = capsys.readouterr()
    assert str(ckpt) in out.err and "aa" in out.out
    assert main(shlex.split(CARD[2])[1:]) == 0
    assert "AdaAD Table 2" in capsys.readouterr().out
