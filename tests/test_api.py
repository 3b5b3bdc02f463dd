"""advkd.api: the engine on your own modules, tensors and DataLoaders, and the example script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import advkd
from advkd.core.errors import AdvkdError
from advkd.evaluation.sanity import TrainModeWarning

ROOT = Path(__file__).resolve().parents[1]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_as_model_normalises_inside_the_model():
    net, (x, _) = _net(), _data(4)
    model = advkd.as_model(net, normalize="cifar10")
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std), atol=1e-6)
    assert torch.allclose(advkd.as_model(net, (CIFAR_MEAN, CIFAR_STD))(x), model(x)) and advkd.as_model(net) is net


def test_attack_on_tensors_stays_in_the_ball_and_breaks_an_undefended_model():
    model, (x, _) = _net(), _data()  # in train mode: the attack warns, runs in eval mode, restores it
    y = model(x).argmax(1)  # every point correct before the attack
    with pytest.warns(TrainModeWarning):
        x_adv = advkd.attack(model, x, y, "pgd10", eps="8/255")
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model(x_adv).argmax(1) == y).float().mean() < 0.9
    assert model.training  # restored


def test_evaluate_model_on_tensors_a_tensordata_and_a_dataloader_agree():
    model, (x, y) = _net().eval(), _data()
    y = model(x).argmax(1).where(torch.arange(len(y)) % 4 != 0, y)  # most points correct
    by_tensors = advkd.evaluate_model(model, (x, y), attacks=["fgsm", "pgd10"], attack_examples={"pgd10": 32})
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    by_loader = advkd.evaluate_model(model, loader, attacks=["fgsm", "pgd10"], attack_examples={"pgd10": 32})
    acc = {r["attack"]: r["accuracy"] for r in by_tensors}
    assert acc == {r["attack"]: r["accuracy"] for r in by_loader} and set(acc) == {"clean", "fgsm", "pgd10"}
    rec = {r["attack"]: r for r in by_tensors}
    expected = advkd.evaluate(model, advkd.TensorData(x, y), ["clean", "fgsm"], eps="8/255")
    assert rec["fgsm"]["accuracy"] == expected["fgsm"].accuracy and rec["clean"]["accuracy"] == expected["clean"].accuracy
    assert rec["pgd10"]["n_examples"] == 32 and rec["clean"]["n_examples"] == 64
    for key in ("attack", "kind", "params", "eps", "threat_model", "correct", "accuracy", "robust_flags", "seconds", "versions"):
        assert key in rec["pgd10"], key
    with pytest.raises(AdvkdError):
        advkd.evaluate_model(model, (x, y), attacks=["nosuchattack"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        advkd.evaluate_model(model, (x * 3, y))


def test_train_step_moves_the_weights_down_the_loss():
    model, (x, y) = _net(), _data()
    method = advkd.build_method("natural")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    first = advkd.train_step(method, model, opt, x, y)["loss"]
    for _ in range(20):
        last = advkd.train_step(method, model, opt, x, y)["loss"]
    assert last < first and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("bad", [{"epoch": 1}])
def test_distill_refuses_unknown_settings(tmp_path, bad):
    with pytest.raises(AdvkdError, match="unknown setting 'epoch'"):
        advkd.distill("rslad", student="tinycnn", dataset="synthetic", runs_dir=tmp_path, **bad)


@pytest.mark.slow  # two distill runs and an evaluation in a subprocess (make test-slow)
def test_the_example_script_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_api.py"), "--runs-dir", str(tmp_path / "runs"),
                          "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "evaluate: {'clean'" in out.stdout and "distilled:" in out.stdout
    assert list((tmp_path / "runs" / "distill" / "synthetic").glob("tinycnn-rslad-tinycnn-*/best.safetensors"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_python_entry_points_tune_malloc_once_in_a_fresh_process():
    code = (
        "import torch, advkd\n"
        "from advkd.core import accel\n"
        "assert accel._MALLOC_TUNED is None\n"
        "advkd.evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10)), "
        "advkd.TensorData(torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)), ['clean'])\n"
        "assert accel._MALLOC_TUNED is True, accel._MALLOC_TUNED\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "ADVKD_NO_MALLOPT"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def test_dir_lists_the_public_api_only():
    import advkd

    public = {n for n in dir(advkd) if not n.startswith("__")}
    assert public == set(advkd.__all__) - {"__version__"}  # no Any, importlib or annotations in a notebook's completion
