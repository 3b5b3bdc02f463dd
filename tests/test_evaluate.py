"""Evaluation: skipping rules, worst case, transfer, sanity flags on a gradient-masking model."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advkd.cli import main
from advkd.data.batches import TensorData
from advkd.evaluation.evaluate import CLEAN, evaluate, worst_case
from advkd.evaluation.records import read_records
from advkd.evaluation.sanity import Accuracy, TrainModeWarning, sanity_flags


def make_data(n: int = 200, seed: int = 0) -> TensorData:
    """Linearly separable 4-class 3x4x4 images: class c brightens channel c % 3 and a corner."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 3, 4, 4, generator=g) * 0.3 + 0.35
    for c in range(4):
        m = y == c
        x[m, c % 3] += 0.25 if c < 3 else -0.25
        if c == 3:
            x[m, :, 0, 0] += 0.3
    return TensorData((x.clamp(0, 1) * 255).round().to(torch.uint8), y)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = make_data(400)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = data.images.float() / 255, data.labels
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


class Quantized(nn.Module):
    """Gradient masking: rounding the input to 1/8 steps has a zero gradient almost everywhere."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 8) / 8)


def test_points_misclassified_clean_are_never_attacked_and_count_as_broken(trained):
    data = make_data(120, seed=1)
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return trained(x)

    out = evaluate(Spy().eval(), data, ["clean", "pgd10"], eps="8/255", batch_size=64)
    clean, pgd = out[CLEAN].correct, out["pgd10"].correct
    assert not (pgd & ~clean).any()
    assert out["pgd10"].n == 120 and out["pgd10"].accuracy <= out[CLEAN].accuracy
    assert out["pgd10"].params["steps"] == 10 and out["pgd10"].eps.text == "8/255"


def test_worst_case_is_pointwise_and(trained):
    data = make_data(120, seed=2)
    out = evaluate(trained, data, ["clean", "fgsm", "pgd10"], eps="16/255", batch_size=50)
    worst = worst_case(out)
    assert torch.equal(worst, out["clean"].correct & out["fgsm"].correct & out["pgd10"].correct)


def test_evaluation_restores_train_mode_and_flags_it(trained):
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    net.train()
    with pytest.warns(TrainModeWarning, match="model-in-train-mode"):
        out = evaluate(net, make_data(40), ["clean", "fgsm"], batch_size=40)
    assert net.training
    assert out[CLEAN].extra.get("model_was_training") is True
    accs = [Accuracy(a, o.kind, o.accuracy) for a, o in out.items()]
    assert any("train-mode" in f for f in sanity_flags(accs, model_was_training=True))


def test_sanity_flags_fire_on_a_gradient_masking_model(trained):
    data = make_data(200, seed=3)
    masked = Quantized(trained).eval()
    white = evaluate(masked, data, ["clean", "fgsm", "pgd10"], eps="64/255", batch_size=100)
    transfer = evaluate(masked, data, ["clean", "pgd10"], eps="64/255", batch_size=100, surrogate=trained)
    # the masked model looks robust to its own gradients but falls to examples crafted elsewhere
    assert transfer["pgd10"].accuracy + 10 < white["pgd10"].accuracy
    accs = [Accuracy(a, o.kind, o.accuracy) for a, o in white.items()] + [Accuracy("transfer-pgd10", "transfer", transfer["pgd10"].accuracy)]
    flags = sanity_flags(accs)
    assert any(f.startswith("transfer-below-white-box") for f in flags), flags
    # the honest model raises no flag
    honest = evaluate(trained, data, ["clean", "fgsm", "pgd10"], eps="64/255", batch_size=100)
    assert sanity_flags([Accuracy(a, o.kind, o.accuracy) for a, o in honest.items()]) == []


def test_sanity_rules_on_constructed_numbers():
    assert any("fgsm-below-iterative" in f for f in sanity_flags([Accuracy("fgsm", "white-box", 20.0), Accuracy("pgd10", "white-box", 40.0)]))
    assert any("more-steps-weaker" in f for f in sanity_flags([Accuracy("pgd10", "white-box", 40.0), Accuracy("pgd20-sat", "white-box", 45.0)]))
    assert sanity_flags([Accuracy("pgd10", "white-box", 40.0), Accuracy("pgd20-sat", "white-box", 40.3)]) == []


def test_transfer_attack_cli_records_both_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    fast = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32"]
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--name", "surrogate", *fast]) == 0
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--name", "target", "--seed", "1", *fast]) == 0
    runs = tmp_path / "runs" / "pretrain-teacher" / "synthetic"
    capsys.readouterr()
    code = main(["transfer-attack", "--surrogate", str(runs / "surrogate" / "best.safetensors"), "--target", str(runs / "target" / "best.safetensors"), "--attacks", "fgsm,pgd10", "--n", "24", "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["attack"] for r in report["results"]] == ["clean", "transfer-fgsm", "transfer-pgd10"]
    assert report["surrogate"].endswith("surrogate/best.safetensors")
    records = read_records(tmp_path / "runs" / "results.jsonl")
    assert len(records) == 3
    for r in records:
        assert r["checkpoint"].endswith("target/best.safetensors")
        assert r["surrogate"]["checkpoint"].endswith("surrogate/best.safetensors") and r["surrogate"]["sha256"]
    assert {r["kind"] for r in records} == {"clean", "transfer"}
