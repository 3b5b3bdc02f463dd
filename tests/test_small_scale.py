"""The ``small`` scale (issue 11): preset resolution, its plan, per-attack example counts, and
mean ± spread over seeds in the tables."""
from __future__ import annotations

import json
import shlex

import pytest
import torch
from test_report import rec, teacher

from advkd.cli import main
from advkd.data.batches import TensorData
from advkd.evaluation.evaluate import evaluate, worst_case
from advkd.report import build_table, render
from advkd.report.ranking import rankings
from advkd.training.config import TrainConfig, load_preset, resolve_config

STUDENT_METHODS = ("pgd-at", "trades", "ard", "iad", "rslad", "akd", "adaad", "adaiad", "mtard", "bmtard")


def small(method: str, arch: str, kind: str = "distill") -> TrainConfig:
    return resolve_config(TrainConfig(kind=kind, method=method, arch=arch), preset="small", set_items=[], flags={})


@pytest.mark.parametrize("method", STUDENT_METHODS)
def test_small_students_are_resnet8_on_4500_images_for_8_epochs_of_batch_64(method):
    cfg = small(method, "resnet18")
    assert cfg.scale == "small" and cfg.preset == "small"
    assert cfg.arch_map["resnet18"] == "resnet8" and cfg.arch_map["mobilenetv2"] == "resnet8"
    assert (cfg.train_subset, cfg.epochs, cfg.batch_size, cfg.milestones) == (4500, 8, 64, [4, 6])
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas) == ("adamw", 6e-3, 0.05, [0.9, 0.999])  # the reduced-scale recipe
    assert (cfg.eval_examples, cfg.eval_attack) == (500, "pgd10")
    assert cfg.select == ("w_robust" if method in ("mtard", "bmtard") else "pgd10")
    # the introspection start scales with the schedule (60 of 200 epochs -> after 2 of 8); nothing else is changed
    assert cfg.method_params == ({"begin": 2} if method in ("iad", "adaiad") else {})


@pytest.mark.parametrize(("arch", "method"), [("wrn34-10", "trades"), ("wrn34-20", "trades"), ("resnet56", "natural")])
def test_small_teachers_are_resnet14_on_four_times_the_student_budget(arch, method):
    cfg = small(method, arch, kind="pretrain-teacher")
    assert cfg.arch_map[arch] == "resnet14"
    assert (cfg.train_subset, cfg.epochs, cfg.batch_size) == (18000, 8, 64)
    assert cfg.select == ("clean" if method == "natural" else "pgd10")


def test_small_preset_lists_every_deviation_and_its_evaluation():
    p = load_preset("small")
    text = " ".join(p.deviations)
    for needle in ("ResNet-8", "ResNet-14", "4500", "18000", "Batch 64", "[4, 6]", "first 1000", "first 100", "first 200", "10 steps of 2/255",
                   "AdamW, lr 6e-3", "--set optimizer=sgd --set lr=0.1 --set weight_decay=5e-4"):
        assert needle in text, needle
    assert p.evaluation == {"n_examples": 1000, "attack_examples": {"aa": 100, "cw2": 200}, "seeds": {"pgd-at": 3, "rslad": 3, "adaad": 3, "bmtard": 3},
                            "expected_accuracy": {"clean": 36, "robust": 25}}
    assert p.paper == ""  # fills both papers' tables


def _commands(capsys, *args: str) -> list[str]:
    assert main(["report", *args]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]


def test_small_plans_train_three_seeds_and_attack_slow_attacks_on_fewer_images(tmp_path, capsys):
    runs = str(tmp_path)
    table2 = _commands(capsys, "table2", "--plan", "--preset", "small", "--only", "student=resnet18", "--only", "teacher=wrn34-10", "--runs-dir", runs)
    distills = [c for c in table2 if c.startswith("advkd distill")]
    assert sorted(shlex.split(c)[3] for c in distills) == sorted(["pgd-at"] * 3 + ["trades", "ard", "iad"] + ["rslad"] * 3 + ["akd"] + ["adaad"] * 3 + ["adaiad"])
    assert sum("--seed 1" in c for c in distills) == sum("--seed 2" in c for c in distills) == 3 and all("--preset small" in c for c in distills)
    attacks = [c for c in table2 if c.startswith("advkd attack")]
    assert len(attacks) == 14
    assert all("--suite adaad --n-examples 1000 --attack-examples=aa=100 --attack-examples=cw2=200" in c for c in attacks)
    assert any("rslad-wrn34-10-small-s1/best.safetensors" in c for c in attacks)

    table3 = _commands(capsys, "bmtard-table3", "--plan", "--preset", "small", "--only", "student=resnet18", "--only", "dataset=cifar10",
                       "--only", "method=mtard,bmtard,rslad", "--runs-dir", runs)
    teachers = [c for c in table3 if c.startswith("advkd pretrain-teacher")]
    assert [shlex.split(c)[3] for c in teachers] == ["wrn34-10", "resnet56"]
    distills = [shlex.split(c)[3] + (" s1" if "--seed 1" in c else " s2" if "--seed 2" in c else "") for c in table3 if c.startswith("advkd distill")]
    assert sorted(distills) == ["bmtard", "bmtard s1", "bmtard s2", "mtard", "rslad", "rslad s1", "rslad s2"]
    assert all("--suite bmtard-white" in c and "--attack-examples=aa=100" in c and "cw2" not in c for c in table3 if c.startswith("advkd attack"))


def test_plan_attacks_only_what_results_jsonl_lacks(tmp_path, capsys):
    """Two tables share the RSLAD student: the second plan adds only the attacks the first did not run."""
    runs = tmp_path
    ckpt = runs / "distill" / "cifar10" / "resnet18-rslad-wrn34-10-small-s0" / "best.safetensors"
    done = [rec(checkpoint=str(ckpt), attack=a, method="rslad", run="resnet18-rslad-wrn34-10-small-s0") for a in ("clean", "fgsm", "aa", "pgd10", "cw2")]
    (runs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done))
    table3 = _commands(capsys, "bmtard-table3", "--plan", "--preset", "small", "--only", "student=resnet18", "--only", "dataset=cifar10",
                       "--only", "method=rslad", "--runs-dir", str(runs))
    mine = [c for c in table3 if c.startswith(f"advkd attack {ckpt} ")]
    assert len(mine) == 1 and "--attacks pgd20-sat,pgd20-trades,cwinf" in mine[0] and "attack-examples" not in mine[0]


def _toy(n: int = 64) -> tuple[torch.nn.Module, TensorData]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    with torch.no_grad():  # a model that is right on most clean points, so the attacks have work to do
        logits = model(images.float() / 255)
    return model.eval(), TensorData(images, logits.argmax(1))


def test_an_attack_limited_to_the_first_points_scores_exactly_those():
    model, data = _toy()
    full = evaluate(model, data, ["clean", "fgsm", "pgd10"], batch_size=16)
    part = evaluate(model, data, ["clean", "fgsm", "pgd10"], batch_size=16, limits={"pgd10": 20})
    assert part["pgd10"].n == 20 and part["fgsm"].n == len(data) and part["clean"].n == len(data)
    assert torch.equal(part["pgd10"].correct, full["pgd10"].correct[:20])  # the same points, the same flags
    assert torch.equal(part["fgsm"].correct, full["fgsm"].correct)
    assert 0 < full["pgd10"].n_correct < full["clean"].n_correct  # the attack broke some points, not all
    worst = worst_case(part)
    assert worst.numel() == 20 and torch.equal(worst, (full["clean"].correct & full["fgsm"].correct & full["pgd10"].correct)[:20])


def test_attack_records_say_how_many_images_each_attack_scored(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    runs = tmp_path / "runs"
    args = ["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", "--dataset", "synthetic", "--epochs", "1",
            "--set", "train_subset=64", "--set", "eval_examples=16", "--set", "select=last", "--runs-dir", str(runs)]
    assert main(args) == 0
    ckpt = next(runs.glob("pretrain-teacher/synthetic/*/best.safetensors"))
    assert main(["attack", str(ckpt), "--attacks", "fgsm,pgd10", "--n-examples", "48", "--attack-examples", "pgd10=16", "--runs-dir", str(runs)]) == 0
    recs = {r["attack"]: r for r in map(json.loads, (runs / "results.jsonl").read_text().splitlines())}
    assert (recs["clean"]["n_examples"], recs["fgsm"]["n_examples"], recs["pgd10"]["n_examples"]) == (48, 48, 16)
    assert "clean_accuracy" not in recs["fgsm"] and 0 <= recs["pgd10"]["clean_accuracy"] <= 100
    assert recs["pgd10"]["accuracy"] <= recs["pgd10"]["clean_accuracy"]
    for bad in ("pgd10=0", "pgd10", "aa=10"):  # not N >= 1; not ATTACK=N; not among the attacks run
        assert main(["attack", str(ckpt), "--attacks", "fgsm,pgd10", "--attack-examples", bad, "--runs-dir", str(runs)]) == 2


def test_a_subset_attack_pairs_with_its_own_clean_accuracy_for_w_robust():
    kw = {"method": "rslad", "teachers": {"teacher": teacher("wrn34-10")}, "dataset": "cifar10"}
    recs = [rec(attack="clean", accuracy=60.0, **kw), rec(attack="aa", accuracy=30.0, clean_accuracy=50.0, n_examples=100, **kw)]
    cell = build_table("bmtard-table3", recs).cell("cifar10/resnet18", "rslad", "aa", "w_robust")
    assert cell.ours == pytest.approx(40.0)  # (50 + 30) / 2, not (60 + 30) / 2


def _seeded(seed: int, accuracy: float, method: str = "rslad", **kw) -> dict:
    run = f"resnet18-{method}-wrn34-10-small-s{seed}"
    return rec(method=method, teachers={"teacher": teacher("wrn34-10")}, attack="pgd10", accuracy=accuracy, run=run, seed=seed,
               checkpoint=f"runs/distill/cifar10/{run}/best.safetensors", sha256=f"sha-{run}", scale="small", preset="small", **kw)


def test_seeds_of_one_run_are_shown_as_mean_and_sample_sd():
    recs = [_seeded(0, 20.0), _seeded(1, 24.0), _seeded(1, 99.0, time="2024-01-01T00:00:00+0000")]  # an older record of seed 1 loses
    table = build_table("table2", recs)
    cell = table.cell("resnet18", "rslad", "wrn34-10", "pgd10")
    assert cell.ours == pytest.approx(22.0) and cell.spread == pytest.approx(2 ** 0.5 * 2) and cell.seeds == 2
    assert "mean of 2 seeds" in cell.flags and cell.scale == "small" and "small" in cell.flags
    md = render(table, "markdown")
    assert f"**22.00±{2 * 2 ** 0.5:.2f}**ˢ" in md and "mean ± sample standard deviation over seeds" in md and "Scale small" in md
    assert "ours_sd" in render(table, "csv").splitlines()[0]
    one = build_table("table2", recs[:1]).cell("resnet18", "rslad", "wrn34-10", "pgd10")
    assert (one.ours, one.spread, one.seeds) == (20.0, None, 1) and "mean of" not in " ".join(one.flags)


def test_ranking_uses_the_seed_means():
    """Paper (WRN-34-10 block, PGD-10): ARD 52.67 > RSLAD 52.60. RSLAD seeds 10 and 40 (mean 25)
    against ARD 30 agree with the paper; the newest seed alone (40) would flip it."""
    recs = [_seeded(0, 30.0, method="ard"), _seeded(1, 40.0), _seeded(0, 10.0)]
    found = [r for r in rankings(build_table("table2", recs)) if len(r.rows) == 2]
    assert len(found) == 1 and found[0].tau == pytest.approx(1.0) and found[0].flips == []
    recs = [_seeded(0, 20.0, method="ard"), _seeded(1, 40.0), _seeded(0, 10.0)]  # mean 25 > 20: flipped
    found = [r for r in rankings(build_table("table2", recs)) if len(r.rows) == 2]
    assert found[0].tau == pytest.approx(-1.0) and len(found[0].flips) == 1


def test_the_suite_eta_scales_the_remaining_attacks_by_the_measured_rate():
    from advkd.evaluation.evaluate import SuiteClock

    clock = SuiteClock({"fgsm": 100.0, "pgd10": 1100.0, "aa": 2200.0})
    assert clock.done("fgsm", 1.0) == "suite: 1 of 3 attacks done; about 33s left (pgd10, aa)"  # 3300 units at 0.01 s
    assert clock.done("pgd10", 11.0) == "suite: 2 of 3 attacks done; about 22s left (aa)"
    assert clock.done("aa", 5.0) == ""
    model, data = _toy()
    buf = []
    from advkd.core.progress import Reporter

    class Capture(Reporter):
        def log(self, message):
            buf.append(message)

    evaluate(model, data, ["clean", "fgsm", "pgd10"], batch_size=16, reporter=Capture(enabled=False))
    assert any(m.startswith("suite: 1 of 2 attacks done; about ") and m.endswith("left (pgd10)") for m in buf)
