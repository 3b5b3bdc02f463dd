"""Speed switches: defaults per device, bf16 autocast, channels-last, compile wiring, BN folding,
malloc tuning, and that each reaches the training loop, the evaluator and the records."""
from __future__ import annotations

import ctypes.util
import sys

import pytest
import torch
from tiny_runs import FAST
from torch import nn

from advkd.cli import main
from advkd.core.accel import FastPaths, apply_to_model, autocast, eval_model, resolve_fast_paths, to_memory_format, tune_malloc
from advkd.core.runs import read_metrics
from advkd.evaluation.evaluate import CLEAN, evaluate
from advkd.evaluation.records import read_records
from advkd.models import build_model
from advkd.models.checkpoint import load_checkpoint

from tiny_nets import with_bn_statistics


def test_defaults_are_on_for_cuda_and_measured_for_the_cpu(monkeypatch):
    from advkd.core import cpu as cpu_probe

    monkeypatch.setenv("ADVKD_PATHS", "auto")  # the priors a measurement starts from (the conftest runs tests exact)

    monkeypatch.setattr(cpu_probe, "probe", lambda: cpu_probe.CpuProfile("DEFAULT", frozenset()))  # no measured fast path
    cpu = resolve_fast_paths(torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last, cpu.compile) == (False, False, False)
    assert cpu.data_on_device and cpu.fold_bn and cpu.precision == "fp32"
    cuda = resolve_fast_paths(torch.device("cuda"))  # resolving needs no GPU
    assert (cuda.amp, cuda.channels_last, cuda.compile) == (True, True, True)
    assert resolve_fast_paths(torch.device("cuda"), amp_default=False).amp is False  # evaluation: fp32 unless asked
    assert resolve_fast_paths(torch.device("cuda"), amp=False, compile=False).as_record()["compile"] is False
    assert resolve_fast_paths(torch.device("cpu"), amp=True).precision == "bf16-autocast"


def test_autocast_runs_layers_in_bf16_and_returns_fp32_logits():
    lin = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    seen = []
    lin[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.rand(2, 4)
    apply_to_model(lin, FastPaths(amp=True))
    apply_to_model(lin, FastPaths(amp=True))  # idempotent: one hook
    with autocast(torch.device("cpu"), True):
        out = lin(x)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32  # layers bf16, logits (and losses) fp32
    with autocast(torch.device("cpu"), False):
        lin(x)
    assert seen[-1] == torch.float32


def test_channels_last_and_compile_keep_the_function_and_the_parameter_names():
    torch.manual_seed(0)
    model = with_bn_statistics(build_model("resnet8", num_classes=10))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 32, 32)
    expected = model(x)
    paths = FastPaths(channels_last=True, compile=True)
    same = apply_to_model(model, paths, compile_backend="eager")
    assert same is model
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(model.state_dict()) == list(reference)  # no _orig_mod. prefix: checkpoints unchanged
    xin = to_memory_format(x, paths)
    assert xin.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(xin), expected, rtol=1e-4, atol=1e-5)
    assert to_memory_format(torch.rand(2, 5), paths).is_contiguous()  # non-image inputs untouched


def test_folding_bn_removes_every_conv_bn_pair_and_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    model = with_bn_statistics(build_model("resnet8", num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = eval_model(model, FastPaths())
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    out_ref = model(x)
    g_ref, = torch.autograd.grad(out_ref.logsumexp(1).sum(), x)
    out = folded(x)
    g, = torch.autograd.grad(out.logsumexp(1).sum(), x)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-6)


def test_folding_is_skipped_when_off_in_train_mode_or_untraceable():
    model = build_model("tinycnn", num_classes=10).eval()
    assert eval_model(model, FastPaths(fold_bn=False)) is model
    assert eval_model(model.train(), FastPaths()) is model  # train-mode BN uses batch statistics: never fold

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    branchy = Branchy().eval()
    assert eval_model(branchy, FastPaths()) is branchy


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_tune_malloc_applies_on_glibc_once_per_process_and_can_be_switched_off(monkeypatch):
    from advkd.core import accel

    monkeypatch.setattr(accel, "_MALLOC_TUNED", None)  # a fresh process
    monkeypatch.setenv("ADVKD_NO_MALLOPT", "1")
    assert tune_malloc() is False
    monkeypatch.delenv("ADVKD_NO_MALLOPT")
    assert tune_malloc() is False  # once per process: the first call decided
    monkeypatch.setattr(accel, "_MALLOC_TUNED", None)
    assert tune_malloc() is True


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_training_switches_reach_the_loop_and_the_checkpoint(env):
    run = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]
    assert main([*run, "--name", "plain", "--no-amp", "--no-channels-last"]) == 0
    assert main([*run, "--name", "cl", "--channels-last", "--no-amp"]) == 0
    assert main([*run, "--name", "amp", "--amp", "--no-channels-last"]) == 0
    root = env / "runs" / "pretrain-teacher" / "synthetic"
    plain, meta_plain = load_checkpoint(root / "plain" / "last.safetensors")
    cl, meta_cl = load_checkpoint(root / "cl" / "last.safetensors")
    amp, meta_amp = load_checkpoint(root / "amp" / "last.safetensors")
    assert meta_plain["fast_paths"]["amp"] is False and meta_cl["fast_paths"]["channels_last"] is True
    assert meta_amp["fast_paths"]["amp"] is True
    p, c, a = plain.state_dict(), cl.state_dict(), amp.state_dict()
    # channels-last is a layout: the same training up to float reassociation
    assert max((p[k].float() - c[k].float()).abs().max().item() for k in p) < 1e-3
    # bf16 forwards really ran: the weights moved differently (but the run is sane)
    assert max((p[k].float() - a[k].float()).abs().max().item() for k in p) > 0
    assert all(torch.isfinite(v.float()).all() for v in a.values())
    assert read_metrics(root / "amp" / "metrics.jsonl")[0]["train_loss"] > 0


def test_evaluation_records_its_precision_and_folding_keeps_accuracy(env):
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]) == 0
    assert main(["attack", "--attacks", "pgd10", "--n", "32", "--device", "cpu", "--no-fold-bn"]) == 0
    assert main(["attack", "--attacks", "pgd10", "--n", "32", "--device", "cpu"]) == 0
    assert main(["attack", "--attacks", "pgd10", "--n", "32", "--device", "cpu", "--amp"]) == 0
    recs = [r for r in read_records(env / "runs" / "results.jsonl") if r["attack"] == "pgd10"]
    unfolded, folded, bf16 = recs
    assert unfolded["precision"] == folded["precision"] == "fp32" and bf16["precision"] == "bf16-autocast"
    assert unfolded["fast_paths"]["fold_bn"] is False and folded["fast_paths"]["fold_bn"] is True
    assert abs(unfolded["correct"] - folded["correct"]) <= 1  # the same function up to float rounding


def test_evaluate_folded_equals_unfolded_on_clean_points():
    torch.manual_seed(0)
    from advkd.data.loaders import load_split

    model = with_bn_statistics(build_model("tinycnn", num_classes=10))
    data = load_split("synthetic", "test", ".").head(64)
    a = evaluate(model, data, [CLEAN], fast=FastPaths(fold_bn=False))[CLEAN]
    b = evaluate(model, data, [CLEAN], fast=FastPaths(fold_bn=True))[CLEAN]
    assert torch.equal(a.correct, b.correct)
