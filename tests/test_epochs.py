"""Epoch counting: every epoch-valued setting means what its reference script means, and every
record counts epochs from 1.

The convention (docs/training.md, "Epochs"): milestones and IAD's ``begin`` count completed epochs (PyTorch
``MultiStepLR``: ``milestones: [100]`` runs epochs 1-100 at the initial rate); ``eval_dense_from``
is an epoch number as printed (1-based); metrics, checkpoints, records and figures say epoch N
for the N-th epoch. Each reference predicate below is written from the script it cites.
"""
from __future__ import annotations

import json

import pytest
import torch

from advkd.core.progress import Reporter
from advkd.models.checkpoint import read_metadata
from advkd.report.landscape import _label
from advkd.training.config import TrainConfig, resolve_config
from advkd.training.loop import evaluates, lr_at, run

QUIET = Reporter(enabled=False)


def resolved(method: str, preset: str | None, *sets: str, **flags) -> TrainConfig:
    base = TrainConfig(kind="pretrain-teacher" if method in ("natural", "pgd-at", "trades", "score") else "distill", method=method)
    return resolve_config(base, preset=preset, set_items=list(sets), flags=flags)


def epoch_lr(cfg: TrainConfig, number: int) -> float:
    """The lr of epoch ``number`` (1-based) under lr_step=epoch: the loop sets lr_at(epochs completed)."""
    return lr_at(cfg, number - 1)


# ----------------------------------------------------------------------------- evaluation epochs


def test_bmtard_dense_evaluation_includes_epoch_215():
    """MTARD-extension resnet18_mtard_cifar10.py L180, 1-based ``epoch`` (L99):
    ``(epoch % 20 == 0 and epoch < 215) or epoch >= 215 or epoch == 1``."""
    cfg = resolved("bmtard", "bmtard-paper")
    ours = {n for n in range(1, cfg.epochs + 1) if evaluates(cfg, n)}
    reference = {e for e in range(1, 301) if (e % 20 == 0 and e < 215) or e >= 215 or e == 1}
    assert ours == reference
    assert 215 in ours and 214 not in ours


def test_absld_evaluation_epochs_follow_its_script():
    """ABSLD resnet18_absld_cifar10.py (test block after the batch loop), 1-based ``epoch``:
    ``(epoch % 10 == 0 and epoch < 215) or epoch >= 215``; advkd also evaluates epoch 1 (the
    preset's monitor rule for every method)."""
    cfg = resolved("absld", "bmtard-paper")
    ours = {n for n in range(1, cfg.epochs + 1) if evaluates(cfg, n)}
    reference = {e for e in range(1, 301) if (e % 10 == 0 and e < 215) or e >= 215}
    assert ours - reference == {1} and reference <= ours


# ----------------------------------------------------------------------------- lr milestones


@pytest.mark.parametrize(
    "method,preset,reference",
    [
        # boyellow/AdaAD main.py lr_decay: 0-indexed epoch < 100 -> lr_max, < 150 -> /10, else /100
        ("adaad", "adaad-paper", lambda e: 0.1 if e - 1 < 100 else 0.01 if e - 1 < 150 else 0.001),
        # yaodongyu/TRADES train_trades_cifar10.py adjust_learning_rate, 1-based epoch: >= 75 -> lr/10
        ("trades", "official", lambda e: 0.1 if e < 75 else 0.01),
        ("trades", "bmtard-teacher", lambda e: 0.1 if e < 75 else 0.01),
        # MTARD-extension L234-236: after 1-based epoch 215, 260, 285 the lr is multiplied by 0.1
        ("bmtard", "bmtard-paper", lambda e: 0.1 * 0.1 ** sum(e > m for m in (215, 260, 285))),
        # ZFancy/IAD IAD-I.py adjust_learning_rate: 0-indexed ``epoch in [100, 150]``, from the initial lr each time
        ("iad", "official", lambda e: 0.1 if e - 1 < 100 else 0.01),
    ],
)
def test_milestones_give_each_reference_its_epoch_rates(method, preset, reference):
    cfg = resolved(method, preset)
    assert [epoch_lr(cfg, n) for n in range(1, cfg.epochs + 1)] == pytest.approx([reference(n) for n in range(1, cfg.epochs + 1)])


# ----------------------------------------------------------------------------- SCORE per-iteration lr


@pytest.mark.parametrize("preset", [None, "official", "bmtard-paper", "mini"])
def test_score_sets_its_lr_every_iteration_under_every_preset(preset):
    assert resolved("score", preset).lr_step == "iteration"
    assert resolved("score", preset, "lr_step=epoch").lr_step == "epoch"  # still a setting
    assert resolved("trades", preset).lr_step == "epoch"  # the others keep the per-epoch schedule


def _lrs_seen(tmp_path, monkeypatch, lr_step: str) -> list[float]:
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording_step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    cfg = TrainConfig(
        kind="pretrain-teacher", method="score", arch="tinycnn", dataset="synthetic", epochs=2, batch_size=32, train_subset=96,
        eval_examples=32, eval_batch_size=32, eval_attack="", select="clean", milestones=[1], lr=0.05, lr_step=lr_step,
        name=lr_step, method_params={"steps": 1},
    )
    run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=torch.device("cpu"), reporter=QUIET)
    return seen


def test_per_iteration_lr_decays_on_the_last_batch_before_the_milestone(tmp_path, monkeypatch):
    """SCORE without_DDPM/train_cifar.py L301-303: lr = schedule(epoch + (i + 1) / n) before every
    batch, schedule(t) = lr_max for t < 100 (L266-272): batch n of the epoch before the milestone
    is already at the decayed rate."""
    assert _lrs_seen(tmp_path, monkeypatch, "iteration") == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.005, 0.005])
    assert _lrs_seen(tmp_path, monkeypatch, "epoch") == pytest.approx([0.05, 0.05, 0.05, 0.005, 0.005, 0.005])


def test_cosine_per_iteration_uses_the_fractional_epoch():
    cfg = TrainConfig(lr=0.1, schedule="cosine", epochs=10, lr_step="iteration")
    assert lr_at(cfg, 0.5) == pytest.approx(0.05 * (1 + torch.cos(torch.tensor(torch.pi * 0.05)).item()))


# ----------------------------------------------------------------------------- records count from 1


def test_metrics_checkpoints_and_labels_count_epochs_from_one(tmp_path):
    cfg = TrainConfig(
        kind="pretrain-teacher", method="pgd-at", arch="tinycnn", dataset="synthetic", epochs=2, batch_size=32, train_subset=64,
        eval_examples=32, eval_batch_size=32, select="last", milestones=[1], lr=0.05, method_params={"steps": 1},
    )
    summary = run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=torch.device("cpu"), reporter=QUIET)
    rows = [json.loads(line) for line in (summary.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.005])  # milestone 1: epoch 2 is the first at the lower rate
    meta = read_metadata(summary.path / "best.safetensors")
    assert summary.best_epoch == 2 and int(meta["epoch"]) == 2  # select=last: the last epoch, number 2
    assert _label(meta, summary.path / "best.safetensors").endswith("epoch 2")
