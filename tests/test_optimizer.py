"""The optimiser as a training setting: SGD (every reference script's) or AdamW, with its
hyper-parameters and a linear warm-up, through presets, ``--set``, config.yaml, checkpoint
metadata and records; the paper presets keep each reference's SGD."""
from __future__ import annotations

import pytest
import torch
import yaml
from tiny_runs import FAST, tiny_cfg

from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.core.progress import Reporter
from advkd.evaluation.records import read_records
from advkd.methods import list_methods
from advkd.models.checkpoint import read_metadata
from advkd.training import loop
from advkd.training.config import OPTIMIZERS, TrainConfig, list_presets, load_preset, resolve_config
from advkd.training.loop import OPTIMIZER_BUILDERS, make_optimizer, warmup_factor

CPU = torch.device("cpu")


def resolved(preset: str | None, *sets: str, method: str = "pgd-at", arch: str = "resnet18", dataset: str = "cifar10") -> TrainConfig:
    kind = "distill" if method not in ("natural", "pgd-at", "trades") else "pretrain-teacher"
    return resolve_config(TrainConfig(kind=kind), preset=preset, set_items=list(sets), flags={"method": method, "arch": arch, "dataset": dataset})


def test_every_optimizer_name_has_a_builder():
    assert set(OPTIMIZERS) == set(OPTIMIZER_BUILDERS) == {"sgd", "adamw"}


@pytest.mark.parametrize("preset", [p for p in list_presets() if load_preset(p).scale == "paper"])
def test_paper_presets_keep_each_references_sgd(preset):
    for method in list_methods():
        cfg = resolved(preset, method=method)
        assert cfg.optimizer == "sgd" and cfg.warmup_epochs == 0, (preset, method)
        opt = make_optimizer(cfg, torch.nn.Linear(2, 2))
        assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == cfg.momentum


def test_set_selects_adamw_with_its_hyper_parameters_and_names_the_run():
    cfg = resolved("adaad-paper", "optimizer=adamw", "lr=3e-3", "weight_decay=0.05", "betas=[0.8,0.99]", "adam_eps=1e-7", "warmup_epochs=0.5")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.adam_eps, cfg.warmup_epochs) == ("adamw", 3e-3, 0.05, [0.8, 0.99], 1e-7, 0.5)
    opt = make_optimizer(cfg, torch.nn.Linear(2, 2))
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-7 and opt.defaults["weight_decay"] == 0.05
    assert "adamw" in cfg.overrides and "warm0.5" in cfg.overrides  # its own default run name, apart from the preset's


@pytest.mark.parametrize("item,message", [
    ("optimizer=adam", "optimizer"),
    ("betas=[1.2,0.9]", "betas[] must be >= 0 and < 1"),
    ("betas=[0.9]", "betas must be two numbers"),
    ("warmup_epochs=-1", "warmup_epochs must be >= 0"),
    ("adam_eps=0", "adam_eps must be > 0"),
])
def test_bad_optimizer_settings_are_one_line_errors(item, message):
    with pytest.raises(AdvkdError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        resolved("mini", item)


def test_nesterov_is_refused_with_adamw():
    with pytest.raises(AdvkdError, match="nesterov=true is an SGD setting"):
        resolved("mini", "optimizer=adamw", "nesterov=true")


def test_one_adamw_step_is_the_decoupled_update_by_hand():
    """AdamW step 1: m = (1-b1) g, v = (1-b2) g², m̂ = g, v̂ = g²; w <- w (1 - lr wd) - lr m̂ / (sqrt(v̂) + eps)."""
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1, betas=[0.9, 0.999], adam_eps=1e-8)
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    w0 = lin.weight.detach().clone()
    opt = make_optimizer(cfg, lin)
    x = torch.tensor([[1.0, 2.0, -1.0]])
    lin(x).sum().backward()  # g = x
    g = x.clone()
    opt.step()
    expected = w0 * (1 - 0.01 * 0.1) - 0.01 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(lin.weight.detach(), expected, rtol=1e-6, atol=1e-7)


def test_the_warm_up_ramps_the_lr_before_every_batch_then_hands_over_to_the_schedule(tmp_path, monkeypatch):
    seen: list[float] = []
    original = loop.set_lr
    monkeypatch.setattr(loop, "set_lr", lambda opt, lr: (seen.append(lr), original(opt, lr)))
    cfg = tiny_cfg(epochs=2, milestones=[1], lr=0.04, optimizer="adamw", weight_decay=0.0, warmup_epochs=1.0, train_subset=96, batch_size=32)
    loop.run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Reporter(enabled=False))
    # epoch 1: the epoch's lr, then 1/3, 2/3, 3/3 of it before its three batches; epoch 2: the decayed lr, once
    assert seen == pytest.approx([0.04, 0.04 / 3, 0.08 / 3, 0.04, 0.004])
    assert warmup_factor(cfg, 0.5) == 0.5 and warmup_factor(cfg, 1.0) == 1.0 and warmup_factor(tiny_cfg(), 0.0) == 1.0


def test_the_optimizer_reaches_config_yaml_the_checkpoint_and_the_records(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    train = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]
    assert main([*train, "--name", "adamw", "--set", "optimizer=adamw", "--set", "lr=0.003", "--set", "weight_decay=0.05"]) == 0
    assert main([*train, "--name", "sgd"]) == 0
    root = tmp_path / "runs" / "pretrain-teacher" / "synthetic"
    saved = yaml.safe_load((root / "adamw" / "config.yaml").read_text())
    assert saved["optimizer"] == "adamw" and saved["betas"] == [0.9, 0.999] and saved["weight_decay"] == 0.05
    assert read_metadata(root / "adamw" / "last.safetensors")["config"]["optimizer"] == "adamw"
    for name in ("adamw", "sgd"):
        assert main(["attack", str(root / name / "last.safetensors"), "--attacks", "fgsm", "--n", "16", "--device", "cpu"]) == 0
    recs = read_records(tmp_path / "runs" / "results.jsonl")
    assert {r["run"]: r["train_optimizer"] for r in recs} == {"adamw": "adamw", "sgd": "sgd"}
    # resuming under another optimiser would not continue the same run
    assert main([*[a if a != "1" else "2" for a in train], "--name", "adamw", "--resume"]) == 2


@pytest.mark.parametrize("preset", ["mini", "small"])
@pytest.mark.parametrize("method", ["pgd-at", "trades", "rslad", "ard", "adaad", "mtard", "bmtard"])
def test_the_reduced_scales_give_every_method_one_adamw_recipe_and_sgd_back_on_request(preset, method):
    cfg = resolved(preset, method=method)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.warmup_epochs) == ("adamw", 6e-3, 0.05, [0.9, 0.999], 0.0)
    assert any("AdamW" in d for d in load_preset(preset).deviations)
    old = resolved(preset, "optimizer=sgd", "lr=0.1", "weight_decay=5e-4", method=method)  # the previous recipe, as the deviation says
    assert (old.optimizer, old.lr, old.momentum, old.weight_decay, old.nesterov) == ("sgd", 0.1, 0.9, 5e-4, False)
    assert type(make_optimizer(old, torch.nn.Linear(2, 2))) is torch.optim.SGD
