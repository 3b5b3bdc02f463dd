"""The frozen no-grad path of the evaluation copy (advkd.core.frozen): the same outputs at every
batch size, gradients from the eager graph, and the eager graph wherever freezing is unsafe."""
from __future__ import annotations

import pytest
import torch
from tiny_runs import FAST
from torch import nn

from advkd.core.accel import FastPaths, eval_model, resolve_fast_paths
from advkd.core.frozen import FREEZE_AFTER, FrozenInference
from advkd.models import build_model

from tiny_nets import with_bn_statistics


@pytest.fixture
def resnet8() -> nn.Module:
    torch.manual_seed(0)
    return with_bn_statistics(build_model("resnet8", num_classes=10))


def warm(net: nn.Module, n: int = 4) -> None:
    """The no-grad calls after which ``net`` builds its frozen copy."""
    with torch.no_grad():
        for _ in range(FREEZE_AFTER):
            net(torch.rand(n, 3, 32, 32))


def test_no_grad_forwards_use_the_frozen_copy_and_equal_the_model_at_every_batch_size(resnet8):
    net = eval_model(resnet8, FastPaths())
    assert isinstance(net, FrozenInference)
    warm(net)
    assert net.frozen_keys == []  # a few no-grad calls (a clean pass) never pay for freezing
    for n in (5, 1, 3, 16):  # traced on two images of the first frozen call, then other sizes
        x = torch.rand(n, 3, 32, 32)
        with torch.no_grad():
            got, want = net(x), resnet8(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert net.frozen_keys == [(torch.device("cpu"), torch.float32, 4)]
    frozen = net._frozen[net.frozen_keys[0]]
    assert isinstance(frozen, torch.jit.ScriptModule)


def test_input_gradients_come_from_the_eager_graph(resnet8, monkeypatch):
    net = eval_model(resnet8, FastPaths())
    x = torch.rand(4, 3, 32, 32)
    warm(net)
    with torch.no_grad():
        net(x)  # builds the frozen copy
    calls = []
    frozen = net._frozen[net.frozen_keys[0]]
    net._frozen[net.frozen_keys[0]] = lambda t: calls.append(t) or frozen(t)
    xg = x.clone().requires_grad_(True)
    out = net(xg)
    assert calls == [] and out.requires_grad  # a gradient-needing call never reaches the frozen copy
    g, = torch.autograd.grad(out.logsumexp(1).sum(), xg)
    xr = x.clone().requires_grad_(True)
    g_ref, = torch.autograd.grad(resnet8(xr).logsumexp(1).sum(), xr)
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-6)
    out = net(x)  # grad mode on, but nothing needs a gradient: the frozen copy, no autograd graph
    assert len(calls) == 1 and not out.requires_grad


def test_parameters_that_need_gradients_keep_the_eager_graph():
    torch.manual_seed(0)
    graph = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)))
    graph(torch.rand(2, 3, 8, 8))
    net = FrozenInference(graph)
    for _ in range(FREEZE_AFTER + 1):
        out = net(torch.rand(2, 3, 8, 8))  # grad mode, parameters trainable: a caller may want their .grad
        assert out.requires_grad
    assert net.frozen_keys == [] and net._calls == {}


def test_a_trace_that_specialises_on_the_batch_size_is_never_used():
    class Sized(nn.Module):  # the trace bakes len(x) in: wrong for any other batch size
        def forward(self, x):
            return x.flatten(1).sum(1) + torch.arange(int(x.shape[0]), dtype=x.dtype)

    net = FrozenInference(Sized())
    for n in (4,) * FREEZE_AFTER + (4, 7, 1):
        x = torch.rand(n, 3, 2, 2)
        with torch.no_grad():
            torch.testing.assert_close(net(x), Sized()(x))
    assert net.frozen_keys == []  # the check at another batch size refused the copy for good


def test_autocast_empty_and_non_tensor_inputs_stay_on_the_eager_graph(resnet8):
    net = eval_model(resnet8, FastPaths())
    with torch.no_grad():
        for _ in range(FREEZE_AFTER + 1):
            assert net(torch.rand(0, 3, 32, 32)).shape == (0, 10)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert net(torch.rand(2, 3, 32, 32)).dtype == torch.bfloat16
    assert net.frozen_keys == []


def test_freeze_is_on_for_the_cpu_off_for_cuda_and_needs_the_folded_copy(resnet8):
    assert resolve_fast_paths(torch.device("cpu")).freeze is True
    assert resolve_fast_paths(torch.device("cuda")).freeze is False
    assert resolve_fast_paths(torch.device("cpu"), freeze=False).freeze is False
    assert not isinstance(eval_model(resnet8, FastPaths(freeze=False)), FrozenInference)
    assert eval_model(resnet8, FastPaths(fold_bn=False)) is resnet8  # --no-fold-bn: the model as stored, both paths
    assert not isinstance(eval_model(resnet8, FastPaths(amp=True)), FrozenInference)


def test_attack_records_whether_the_frozen_copy_was_on(tmp_path, monkeypatch):
    from advkd.cli import main
    from advkd.evaluation.records import read_records

    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *FAST, "--device", "cpu"]) == 0
    assert main(["attack", "--attacks", "square", "--n", "32", "--device", "cpu"]) == 0
    assert main(["attack", "--attacks", "square", "--n", "32", "--device", "cpu", "--no-freeze"]) == 0
    frozen, eager = [r for r in read_records(tmp_path / "runs" / "results.jsonl") if r["attack"] == "square"]
    assert frozen["fast_paths"]["freeze"] is True and eager["fast_paths"]["freeze"] is False
    assert frozen["robust_flags"] == eager["robust_flags"]  # the same function: the same score-based decisions


def test_non_finite_outputs_keep_the_eager_graph(resnet8):
    with torch.no_grad():
        next(resnet8.parameters()).fill_(float("inf"))
    net = eval_model(resnet8, FastPaths())
    warm(net)
    with torch.no_grad():
        out = net(torch.rand(3, 3, 32, 32))
    assert not torch.isfinite(out).all() and net.frozen_keys == [] and net._frozen  # tried, refused
