"""The training loop: exact resume, files of a run dir, selection, NaN guard, clean failure."""
from __future__ import annotations

import json

import pytest
import tiny_runs
import torch
import yaml
from safetensors.torch import load_file

from advkd.core.errors import AdvkdError
from advkd.core.progress import Reporter
from advkd.models.checkpoint import read_metadata
from advkd.training.config import TrainConfig, resolve_config
from advkd.training.loop import lr_at, prepare, run

QUIET = Reporter(enabled=False)
CPU = torch.device("cpu")


def tiny_cfg(**kw) -> TrainConfig:
    """tiny_runs' run with 3 epochs and the decay after 2."""
    return tiny_runs.tiny_cfg(**{"epochs": 3, "milestones": [2], **kw})


def weights(path):
    return load_file(str(path))


def test_piecewise_and_cosine_schedules():
    cfg = TrainConfig(lr=0.1, milestones=[100, 150], epochs=200)
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 99) == pytest.approx(0.1)
    assert lr_at(cfg, 100) == pytest.approx(0.01)
    assert lr_at(cfg, 150) == pytest.approx(0.001)
    cos = TrainConfig(lr=0.1, schedule="cosine", epochs=10)
    assert lr_at(cos, 0) == pytest.approx(0.1)
    assert lr_at(cos, 5) == pytest.approx(0.05)
    assert lr_at(cos, 9) < lr_at(cos, 8)


def test_run_dir_files_and_metadata(tmp_path):
    summary = run(tiny_cfg(epochs=2, save_every=1), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    d = summary.path
    assert d == tmp_path / "pretrain-teacher" / "synthetic" / "tinycnn-pgd-at-s7"
    for name in ("config.yaml", "env.json", "metrics.jsonl", "best.safetensors", "last.safetensors", "resume.safetensors", "epoch-001.safetensors", "epoch-002.safetensors"):
        assert (d / name).is_file(), name
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # epochs count from 1 in every record
    assert read_metadata(d / "last.safetensors")["epoch"] == 2
    assert {"train_loss", "lr", "clean_acc", "robust_acc", "w_robust"} <= set(rows[0])
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["arch"] == "tinycnn" and cfg["method_params"] == {"steps": 2}
    meta = read_metadata(d / "best.safetensors")
    assert meta["arch"] == "tinycnn" and meta["dataset"] == "synthetic" and meta["method"] == "pgd-at"
    assert meta["config"]["epochs"] == 2 and meta["teachers"] == {}
    assert not list(d.glob(".*.tmp"))


def test_best_checkpoint_is_the_first_epoch_reaching_the_max(tmp_path):
    summary = run(tiny_cfg(epochs=3, select="clean"), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    rows = [json.loads(line) for line in (summary.path / "metrics.jsonl").read_text().splitlines()]
    accs = [r["clean_acc"] for r in rows]
    assert summary.best_epoch == accs.index(max(accs)) + 1  # an epoch number, as metrics.jsonl writes it
    assert read_metadata(summary.path / "best.safetensors")["epoch"] == summary.best_epoch


ADAMW = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 1.5}  # the warm-up runs across the resume


@pytest.mark.parametrize("method,teacher,opt", [("pgd-at", False, {}), ("rslad", True, {}), ("pgd-at", False, ADAMW)], ids=["pgd-at", "rslad", "pgd-at-adamw"])
def test_resume_after_epoch_one_equals_uninterrupted_run(tmp_path, method, teacher, opt):
    teachers = {}
    if teacher:
        t = run(tiny_cfg(epochs=1, name="teacher"), runs_dir=tmp_path / "t", data_dir=tmp_path, device=CPU, reporter=QUIET)
        teachers = {"teacher": str(t.path / "best.safetensors")}
    kind = "distill" if teacher else "pretrain-teacher"
    full = run(tiny_cfg(kind=kind, method=method, teachers=teachers, **opt), runs_dir=tmp_path / "a", data_dir=tmp_path, device=CPU, reporter=QUIET)
    # "interrupted" run: the same command stopped after epoch 1, then resumed
    run(tiny_cfg(kind=kind, method=method, teachers=teachers, epochs=1, **opt), runs_dir=tmp_path / "b", data_dir=tmp_path, device=CPU, reporter=QUIET)
    torch.manual_seed(12345)  # a resumed process starts from arbitrary RNG state
    resumed = run(tiny_cfg(kind=kind, method=method, teachers=teachers, **opt), runs_dir=tmp_path / "b", data_dir=tmp_path, device=CPU, resume=True,
                  reporter=QUIET)
    if opt:
        state = load_file(str(resumed.path / "resume.safetensors"))
        assert any(k.endswith(".exp_avg_sq") for k in state)  # AdamW's moments were saved and restored
    assert resumed.epochs_run == 2
    a, b = weights(full.path / "last.safetensors"), weights(resumed.path / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = (full.path / "metrics.jsonl").read_text().splitlines()
    rb = (resumed.path / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)


def test_resume_of_complete_run_is_a_noop_and_existing_run_needs_resume(tmp_path):
    cfg = tiny_cfg(epochs=1)
    run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    again = run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=QUIET)
    assert again.already_complete and again.epochs_run == 0
    with pytest.raises(AdvkdError, match=r"already exists; pass resume=True to continue it, or name=\.\.\."):
        run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    with pytest.raises(AdvkdError, match="cannot resume"):
        run(tiny_cfg(epochs=1, lr=0.01), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=QUIET)


def test_a_setting_moved_from_set_into_the_preset_resumes_the_same_run(tmp_path):
    """The run-name tag (``overrides``) records how a setting was given; resuming compares the
    settings themselves, so a preset that now says what ``--set`` said continues the run."""
    set_given = tiny_cfg(epochs=1, name="r", overrides="lr0.02", lr=0.02)
    run(set_given, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    in_preset = tiny_cfg(epochs=2, name="r", overrides="", lr=0.02)
    assert run(in_preset, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=QUIET).epochs_run == 1
    with pytest.raises(AdvkdError, match="started with lr=0.02"):
        run(tiny_cfg(epochs=3, name="r", lr=0.05), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=QUIET)


def test_nan_loss_stops_with_clear_error_and_leaves_no_run_dir(tmp_path):
    cfg = tiny_cfg(epochs=1, lr=1e30, method="natural", method_params={})
    with pytest.raises(AdvkdError, match="loss became nan|loss became inf"):
        run(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    assert not (tmp_path / "pretrain-teacher" / "synthetic" / "tinycnn-natural-s7").exists()


def test_teacher_methods_are_refused_by_pretrain_and_roles_checked(tmp_path):
    with pytest.raises(AdvkdError, match="use advkd distill"):
        prepare(tiny_cfg(method="rslad"), runs_dir=tmp_path, data_dir=tmp_path, device=CPU)
    with pytest.raises(AdvkdError, match=r"needs teachers=\{'teacher': \.\.\.\}"):  # advkd.train(cfg): TrainConfig.teachers
        prepare(tiny_cfg(kind="distill", method="rslad"), runs_dir=tmp_path, data_dir=tmp_path, device=CPU)


def test_unresolvable_teacher_prints_the_pretrain_command(tmp_path):
    cfg = tiny_cfg(kind="distill", method="ard", teachers={"teacher": "resnet20"})
    with pytest.raises(AdvkdError, match="advkd pretrain-teacher --arch resnet20 --method trades --dataset synthetic"):
        prepare(cfg, runs_dir=tmp_path, data_dir=tmp_path, device=CPU)


def test_teacher_store_resolves_newest_robust_run_by_arch(tmp_path):
    run(tiny_cfg(epochs=1, method="natural", method_params={}, select="clean"), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    with pytest.raises(AdvkdError, match="no robust tinycnn teacher"):
        prepare(tiny_cfg(kind="distill", method="ard", teachers={"teacher": "tinycnn"}), runs_dir=tmp_path, data_dir=tmp_path, device=CPU)
    run(tiny_cfg(epochs=1), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=QUIET)
    setup = prepare(tiny_cfg(kind="distill", method="ard", teachers={"teacher": "tinycnn"}), runs_dir=tmp_path, data_dir=tmp_path, device=CPU)
    assert setup.teachers["teacher"].method == "pgd-at"
    assert setup.path.name == "tinycnn-ard-tinycnn-s7"  # self-distillation works: teacher arch == student arch


def test_preset_layering_order():
    cfg = resolve_config(TrainConfig(method="pgd-at"), preset="adaad-paper", set_items=["lr=0.05", "method.steps=3"], flags={"epochs": 7, "method": "pgd-at"})
    assert cfg.epochs == 7  # flag beats preset's per-method 110
    assert cfg.milestones == [100, 105]  # per-method preset beats preset train
    assert cfg.lr == 0.05  # --set beats preset
    assert cfg.method_params == {"steps": 3}
    assert cfg.preset == "adaad-paper" and cfg.scale == "paper"


def test_bmtard_resume_restores_temperatures_and_weights_exactly(tmp_path):
    """A B-MTARD run interrupted after epoch 1 and resumed equals the uninterrupted run,
    weights and balancer state (temperatures, loss weights, initial losses) alike."""
    clean = run(tiny_cfg(epochs=1, method="natural", method_params={}, name="clean"), runs_dir=tmp_path / "t", data_dir=tmp_path, device=CPU, reporter=QUIET)
    robust = run(tiny_cfg(epochs=1, name="robust"), runs_dir=tmp_path / "t", data_dir=tmp_path, device=CPU, reporter=QUIET)
    teachers = {"clean_teacher": str(clean.path / "best.safetensors"), "robust_teacher": str(robust.path / "best.safetensors")}
    params = {"steps": 2, "tau_rate": 0.05}  # a large rate so the temperatures visibly move
    full = run(tiny_cfg(kind="distill", method="bmtard", teachers=teachers, method_params=params), runs_dir=tmp_path / "a", data_dir=tmp_path, device=CPU, reporter=QUIET)
    run(tiny_cfg(kind="distill", method="bmtard", teachers=teachers, method_params=params, epochs=1), runs_dir=tmp_path / "b", data_dir=tmp_path, device=CPU, reporter=QUIET)
    resumed = run(tiny_cfg(kind="distill", method="bmtard", teachers=teachers, method_params=params), runs_dir=tmp_path / "b", data_dir=tmp_path, device=CPU, resume=True, reporter=QUIET)
    assert resumed.method_state == full.method_state
    assert full.method_state["loss_adv_0"] is not None
    assert full.method_state["tau_adv"] != 1.0 or full.method_state["tau_nat"] != 1.0
    a, b = weights(full.path / "last.safetensors"), weights(resumed.path / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
