"""The CPU's prior (the defaults before a measurement, and an attack's channels-last): decided from
the CPU's features (mocked here, so every machine tests every rule); a training run's measured
paths named in its first lines and its records, restored exactly by ``--no-amp
--no-channels-last``, kept by a resume; and a channels-last step equal to the NCHW step to fp32
rounding. The measurement's own rules: tests/test_speed_choice.py."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import FAST

import advkd.methods as methods
from advkd.cli import main
from advkd.core import accel
from advkd.core import cpu as cpu_probe
from advkd.core.accel import FastPaths, resolve_fast_paths
from advkd.core.cpu import CpuProfile, parse_cpuinfo
from advkd.evaluation.records import read_records
from advkd.models import build_model
from advkd.models.checkpoint import read_metadata

from tiny_nets import with_bn_statistics

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def measured_paths(monkeypatch):
    """This module tests the default, measured paths (the conftest makes every other test exact)."""
    monkeypatch.setenv("ADVKD_PATHS", "auto")
# (profile, expected training defaults (amp, channels_last))
PROFILES = {
    "zen4": (CpuProfile("AVX512", frozenset({"avx512f", "avx512_bf16"})), (True, True)),
    "sapphire-rapids": (CpuProfile("AVX512", frozenset({"avx512f", "amx_bf16", "amx_tile"})), (True, True)),
    "skylake-x": (CpuProfile("AVX512", frozenset({"avx512f", "avx512bw"})), (False, True)),  # bf16 emulated: slower, stays fp32
    "zen3": (CpuProfile("AVX2", frozenset({"avx2", "fma"})), (False, True)),  # channels-last measured faster, bf16 emulated
    "graviton3": (CpuProfile("SVE256", frozenset({"sve", "bf16"})), (True, False)),
    "unknown": (CpuProfile("DEFAULT", frozenset()), (False, False)),
}
ZEN4, UNMEASURED = PROFILES["zen4"][0], PROFILES["unknown"][0]


@pytest.fixture
def cpu_is(monkeypatch):
    """Make the feature probe report a given CPU."""
    def pretend(profile: CpuProfile) -> None:
        monkeypatch.setattr(cpu_probe, "probe", lambda: profile)

    return pretend


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.mark.parametrize("name", PROFILES)
def test_the_cpu_defaults_follow_the_cpus_features(cpu_is, name):
    profile, (amp, channels_last) = PROFILES[name]
    cpu_is(profile)
    train = resolve_fast_paths(CPU)
    assert (train.amp, train.channels_last, train.compile) == (amp, channels_last, False)  # compile never on the CPU
    assert train.fold_bn and train.freeze and train.data_on_device
    evaluation = resolve_fast_paths(CPU, amp_default=False)  # advkd attack: fp32 unless asked, whatever the CPU
    assert (evaluation.amp, evaluation.channels_last) == (False, channels_last)
    asked = resolve_fast_paths(CPU, amp=False, channels_last=False)
    assert asked.describe() == "fp32, NCHW" and asked == FastPaths(freeze=True)  # today's path, exactly
    assert resolve_fast_paths(CPU, amp=True, channels_last=True).describe() == "bf16-autocast, channels-last"
    cuda = resolve_fast_paths(torch.device("cuda"))  # the CPU probe never decides a GPU's paths
    assert (cuda.amp, cuda.channels_last, cuda.compile, cuda.freeze) == (True, True, True, False)


def test_cpuinfo_flags_are_read_on_x86_and_arm():
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n"
    arm = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert parse_cpuinfo(x86) == {"fpu", "avx2", "avx512f", "avx512_bf16"}  # the first processor's
    assert CpuProfile("AVX512", parse_cpuinfo(x86)).native_bf16
    assert CpuProfile("SVE256", parse_cpuinfo(arm)).native_bf16
    assert parse_cpuinfo("model name : something\n") == frozenset()
    assert not CpuProfile("AVX512", frozenset({"avx512f"})).native_bf16
    real = cpu_probe.probe()  # this machine, whatever it is: a profile that decides something
    assert isinstance(real.capability, str) and real.capability


def _weights(env, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(env / "runs" / "pretrain-teacher" / "synthetic" / name / "last.safetensors"))


def test_a_run_names_its_paths_first_and_records_them(env, cpu_is, capsys, monkeypatch):
    from advkd.core import speed_choice

    cpu_is(ZEN4)
    monkeypatch.setattr(speed_choice, "measure", lambda steps, **kw: {c: (0.5 if c == (True, True) else 1.0) for c in steps})
    train = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]
    assert main([*train, "--name", "default"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "speed paths: bf16-autocast, channels-last (measured on this machine in" in err and "--no-amp --no-channels-last for fp32 NCHW" in err
    meta = read_metadata(env / "runs" / "pretrain-teacher" / "synthetic" / "default" / "last.safetensors")
    assert (meta["fast_paths"]["amp"], meta["fast_paths"]["channels_last"]) == (True, True)
    ckpt = env / "runs" / "pretrain-teacher" / "synthetic" / "default" / "last.safetensors"
    assert main(["attack", str(ckpt), "--attacks", "pgd10", "--n", "32", "--device", "cpu"]) == 0
    assert "speed paths: fp32, channels-last (the CPU defaults;" in " ".join(capsys.readouterr().err.split())  # attacks: the CPU's prior
    rec = next(r for r in read_records(env / "runs" / "results.jsonl") if r["attack"] == "pgd10")
    assert rec["precision"] == "fp32" and rec["fast_paths"]["channels_last"] is True  # attacks stay fp32
    cpu_is(UNMEASURED)
    assert main(["attack", str(ckpt), "--attacks", "pgd10", "--n", "16", "--device", "cpu"]) == 0
    assert "speed paths: fp32, NCHW (the CPU defaults; this CPU: DEFAULT without native bf16, no measured faster path)" in \
           " ".join(capsys.readouterr().err.split())


def test_no_amp_no_channels_last_restore_the_exact_path_bit_for_bit(env, monkeypatch):
    from advkd.core import speed_choice

    train = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]
    assert main([*train, "--name", "tie-default"]) == 0  # every path timed alike: the exact one, fp32 NCHW
    assert main([*train, "--name", "asked-plain", "--no-amp", "--no-channels-last"]) == 0
    monkeypatch.setattr(speed_choice, "measure", lambda steps, **kw: {c: (0.5 if c == (True, True) else 1.0) for c in steps})
    assert main([*train, "--name", "fast-default", "--paths", "measure"]) == 0  # where bf16 + channels-last measures faster
    plain, asked, fast = _weights(env, "tie-default"), _weights(env, "asked-plain"), _weights(env, "fast-default")
    assert all(torch.equal(plain[k], asked[k]) for k in plain)
    assert any(not torch.equal(plain[k], fast[k]) for k in plain)  # the default really is another path


def test_a_resume_keeps_the_committed_paths_and_says_when_flags_change_them(env, capsys, monkeypatch):
    from advkd.core import speed_choice

    monkeypatch.setattr(speed_choice, "measure", lambda steps, **kw: {c: (0.5 if c == (True, True) else 1.0) for c in steps})
    train = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu", "--name", "r"]
    assert main([*train, "--no-amp", "--no-channels-last"]) == 0
    capsys.readouterr()
    epochs = lambda n: [a if a != "1" else str(n) for a in train]  # noqa: E731 - --epochs n
    assert main([*epochs(2), "--resume"]) == 0  # flags unset: as committed, whatever this machine would measure
    err = " ".join(capsys.readouterr().err.split())
    assert "speed paths: fp32, NCHW (as the run's committed epochs ran)" in err and "bit for bit" not in err
    assert main([*epochs(3), "--resume", "--amp", "--channels-last"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "ran its committed epochs with amp=False, channels_last=False and resumes with amp=True, channels_last=True" in err
    assert "pass --no-amp --no-channels-last to continue as it started" in err
    assert main([*epochs(4), "--resume"]) == 0  # committed epoch 3 ran with bf16 + channels-last: kept, no warning
    err = " ".join(capsys.readouterr().err.split())
    assert "speed paths: bf16-autocast, channels-last (as the run's committed epochs ran)" in err and "bit for bit" not in err


def _one_step(student: torch.nn.Module, paths: FastPaths, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, name: str):
    """The training loop's outer step (inputs in the paths' layout, the method's loss, SGD) on a
    given adversarial batch, and the input gradient an attack step would take there."""
    accel.apply_to_model(student, paths)
    m = methods.build(name, teachers={}, num_classes=10, dataset="synthetic")
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    xb, xa = accel.to_memory_format(x, paths), accel.to_memory_format(x_adv, paths).requires_grad_(True)
    student.eval()
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(student(xa), y), xa)
    student.train()
    loss, _ = m.loss(student, xb, xa.detach(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), grad.contiguous(), {k: v.detach().contiguous() for k, v in student.state_dict().items()}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["natural", "pgd-at", "trades"])
def test_a_channels_last_step_equals_the_nchw_step_to_fp32_rounding(name):
    """Same weights, same batch: loss, the attack's input gradient and the updated weights agree to
    fp32 rounding. (Whole PGD trajectories are compared nowhere: a sign step turns a rounding
    difference in a near-zero gradient entry into another, equally valid iterate.)"""
    torch.manual_seed(0)
    net = with_bn_statistics(build_model("resnet8", num_classes=10)).train()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    x_adv = (x + torch.empty_like(x).uniform_(-8 / 255, 8 / 255)).clamp(0, 1)
    loss_a, grad_a, w_a = _one_step(copy.deepcopy(net), FastPaths(), x, x_adv, y, name)
    loss_b, grad_b, w_b = _one_step(copy.deepcopy(net), FastPaths(channels_last=True), x, x_adv, y, name)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # the copies were converted, not the original
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad_a, grad_b, rtol=1e-3, atol=1e-4 * grad_a.abs().max().item())
    w0 = net.state_dict()
    moved = max((w_a[k].float() - w0[k].float()).abs().max().item() for k in w_a)
    assert moved > 1e-2  # the step moved the weights
    assert max((w_a[k].float() - w_b[k].float()).abs().max().item() for k in w_a) < 1e-3 * moved  # ... the same way
