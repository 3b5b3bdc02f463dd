"""Plan budgets (``advkd.report.budget``): calibration and cache, and the counts, against sums by hand."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FAKE_NET_COST

from advkd.attacks import build
from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.report import budget
from advkd.report.budget import AttackWork, NetCost, TrainWork

S = NetCost(forward=1.0, input_grad=3.0, train=4.0, train_input_grad=3.5)  # student: seconds per image
T = NetCost(forward=10.0, input_grad=30.0, train=40.0, train_input_grad=35.0)  # teacher: ten times the student

PRESET = """
description: budget test
scale: mini
arch_map: {resnet18: tinycnn, wrn34-10: tinycnn}
train: {epochs: 3, batch_size: 10, train_subset: 100, eval_examples: 20, eval_attack: pgd10, eval_every: 2, milestones: [], select: last}
methods:
  adaiad: {params: {begin: 1}}
evaluation:
  expected_accuracy: {clean: 50, robust: 20}
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "budget.yaml"
    path.write_text(PRESET)
    return str(path)


def test_a_real_calibration_times_three_passes_of_the_network():
    cost = budget.real_time_network("tinycnn", "synthetic", torch.device("cpu"))
    assert cost.batch >= 2
    assert 0 < cost.forward < cost.input_grad  # a backward costs more than nothing
    assert cost.train > 0 and cost.train_input_grad > 0


def test_calibration_is_cached_per_device_and_times_only_new_networks(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(budget, "time_network", lambda a, d, dev, paths=None: calls.append(a) or NetCost(1.0, 2.0, 3.0, 2.5, 4))
    cpu = torch.device("cpu")
    first = budget.calibrate({("tinycnn", "synthetic")}, cpu, tmp_path)
    again = budget.calibrate({("tinycnn", "synthetic"), ("resnet8", "synthetic")}, cpu, tmp_path)
    assert calls == ["tinycnn", "resnet8"]
    assert first[("tinycnn", "synthetic")] == again[("tinycnn", "synthetic")] == NetCost(1.0, 2.0, 3.0, 2.5, 4)
    path = budget.calibration_path(tmp_path, cpu)
    assert path.parent == tmp_path / ".calibration" and f"{torch.get_num_threads()}threads" in path.name
    assert set(json.loads(path.read_text())["nets"]) == {"tinycnn@synthetic", "resnet8@synthetic"}
    monkeypatch.setenv("ADVKD_CALIBRATION_DIR", str(tmp_path / "shared"))
    budget.calibrate({("tinycnn", "synthetic")}, cpu, tmp_path)
    assert calls[-1] == "tinycnn" and (tmp_path / "shared" / path.name).is_file()


def test_a_calibration_on_a_busy_machine_is_used_once_and_never_cached(tmp_path, monkeypatch):
    """A busy machine's timings would price every later plan too slow: they price this plan only."""
    monkeypatch.setattr(budget, "time_network", lambda a, d, dev, paths=None: NetCost(9.0, 9.0, 9.0, 9.0, 4))
    monkeypatch.setattr(budget, "busy_machine_warning", lambda: "the machine is busy (load 5.0 on 2 cores)")
    said: list[str] = []
    cost = budget.calibrate({("tinycnn", "synthetic")}, torch.device("cpu"), tmp_path, log=said.append)
    assert cost[("tinycnn", "synthetic")].forward == 9.0
    assert not budget.calibration_path(tmp_path, torch.device("cpu")).exists()
    assert "not cached" in said[0] and "load 5.0" in said[0]


def test_training_and_attacks_are_calibrated_under_the_paths_they_run_with(tmp_path, monkeypatch):
    """A training run's passes under the training defaults (bf16 + channels-last on a CPU with
    native bf16), an attack's under the evaluation defaults (fp32 + channels-last), cached apart."""
    from advkd.core import cpu as cpu_probe

    monkeypatch.setattr(cpu_probe, "probe", lambda: cpu_probe.CpuProfile("AVX512", frozenset({"avx512_bf16"})))
    monkeypatch.setenv("ADVKD_PATHS", "auto")  # plans price the CPU's prior paths (the conftest runs tests exact)
    seen = []
    monkeypatch.setattr(budget, "time_network", lambda a, d, dev, paths=None: seen.append((a, paths.describe())) or NetCost(1.0, 2.0, 3.0, 2.5, 4))
    cpu = torch.device("cpu")
    train = budget.TrainWork(kind="pretrain-teacher", method="pgd-at", arch="tinycnn", dataset="synthetic", preset="mini")
    attack = budget.AttackWork(arch="resnet8", dataset="synthetic", attacks=("pgd10",), n_examples=10)
    budget.estimate_works([train, attack], runs_dir=tmp_path, device=cpu)
    assert sorted(seen) == [("resnet8", "fp32, channels-last"), ("tinycnn", "bf16-autocast, channels-last")]
    keys = set(json.loads(budget.calibration_path(tmp_path, cpu).read_text())["nets"])
    assert keys == {"tinycnn@synthetic+bf16-autocast, channels-last", "resnet8@synthetic+fp32, channels-last"}
    real = budget.real_time_network("tinycnn", "synthetic", cpu, paths=budget.command_paths(cpu, "train"))  # really runs under them
    assert 0 < real.forward < real.input_grad


def test_training_is_priced_from_the_method_passes_and_the_preset_budget(preset):
    # RSLAD: 10 eval attack steps on the student, T(x) once, S(x*) and S(x) with gradient
    work = TrainWork("distill", "rslad", "resnet18", "synthetic", preset, (("teacher", "tinycnn"),))
    est = budget.price_training(work, S, {"teacher": T}, (50.0, 20.0))
    per_image = 10 * S.input_grad + T.forward + 2 * S.train
    assert est.parts["train"] == pytest.approx(3 * 100 * per_image)
    # the monitor after epochs 1, 2 and 3 (first, every 2nd, last): clean forward + PGD-10 (11 passes) on the clean-correct half
    assert est.parts["monitor"] == pytest.approx(3 * 20 * (S.forward + 0.5 * 11 * S.input_grad))
    assert est.seconds == pytest.approx(est.parts["train"] + est.parts["monitor"])
    assert est.what == "3 epochs x 100 images, rslad passes on tinycnn + tinycnn"


def test_adaad_attacks_through_the_teacher_and_adaiad_changes_passes_at_begin(preset):
    teachers = {"teacher": T}
    adaad = budget.step_seconds("adaad", 0, 10, None, S, teachers)
    assert adaad == pytest.approx(10 * (S.input_grad + T.input_grad) + T.forward + S.train + S.forward)
    ard = budget.step_seconds("ard", 0, 10, None, S, teachers)  # the inner attack runs the student in train mode
    assert ard == pytest.approx(10 * S.train_input_grad + T.forward + S.train + S.forward)
    before, after = (budget.step_seconds("adaiad", e, 10, 1, S, teachers) for e in (0, 1))
    assert after - before == pytest.approx(S.train)  # the introspection target S(x) carries gradient from epoch `begin` on
    work = TrainWork("distill", "adaiad", "resnet18", "synthetic", preset, (("teacher", "tinycnn"),))
    assert budget.price_training(work, S, teachers, (50.0, 20.0)).parts["train"] == pytest.approx(100 * (before + 2 * after))


def test_attacks_are_priced_on_the_clean_correct_points_and_autoattack_on_the_survivors():
    aa = build("aa")
    assert aa.expected_passes(0.0) == 100 and aa.expected_passes(1.0) == aa.passes_per_point()
    work = AttackWork("resnet8", "cifar10", ("pgd10", "aa"), 1000, (("aa", 100),), (40.0, 20.0))
    est = budget.price_attacks(work, S)
    assert est.parts["clean"] == 1000 * S.forward
    assert est.parts["pgd10"] == pytest.approx(1000 * 0.4 * 11 * S.input_grad)
    assert est.parts["aa"] == pytest.approx(100 * 0.4 * (100 + 0.5 * (aa.passes_per_point() - 100)) * S.input_grad)
    transfer = budget.price_attacks(AttackWork("resnet8", "cifar10", ("pgd10",), 10, surrogate="resnet14"), S, T)
    assert transfer.parts["pgd10"] == pytest.approx(10 * 0.84 * 11 * T.input_grad)  # crafted on the surrogate


def test_score_based_attacks_count_their_queries():
    assert build("square").passes_per_point() == pytest.approx(100 / 3)
    assert build("rays").passes_per_point() == pytest.approx(100 / 3)
    assert build("spsa").passes_per_point() == pytest.approx((20 * 100 + 20 * 1000 + 60 * 20000) / 3)


@pytest.mark.parametrize("prior", [{"clean": 30, "robust": 40}, {"clean": "high", "robust": 1}])
def test_a_bad_accuracy_prior_is_refused(prior):
    with pytest.raises(AdvkdError, match="expected_accuracy"):
        budget.expected_accuracy({"expected_accuracy": prior})


def test_the_plan_prices_each_command_and_the_total(tmp_path, capsys):
    assert main(["report", "table2", "--plan", "--preset", "mini", "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "still to run; about " in lines[0] and "on this CPU" in lines[0]
    commands = [i for i, line in enumerate(lines) if line.startswith("advkd ")]
    assert commands and all(lines[i - 1].startswith("# about ") for i in commands)
    assert "calibrating" in err and ".calibration" in err  # once, on stderr: the plan itself stays a clean script
    assert main(["report", "table2", "--plan", "--preset", "mini", "--runs-dir", str(tmp_path)]) == 0
    assert "calibrating" not in capsys.readouterr().err  # cached
    assert main(["report", "table2", "--plan", "--preset", "mini", "--no-estimate", "--runs-dir", str(tmp_path)]) == 0
    plain = capsys.readouterr().out
    assert "# about" not in plain and [c for c in plain.splitlines() if c.startswith("advkd ")] == [lines[i] for i in commands]


def test_the_fake_calibration_of_the_tests_is_what_plans_use(tmp_path):
    cost = budget.calibrate({("resnet8", "cifar10")}, torch.device("cpu"), tmp_path)[("resnet8", "cifar10")]
    assert cost == NetCost(**FAKE_NET_COST)


def test_durations_are_rounded_like_estimates():
    assert [budget.duration(s) for s in (5, 600, 5 * 3600, 90 * 86400)] == ["5 s", "10 min", "5.0 h", "90 days"]


def test_the_plan_prices_attacks_on_the_points_the_commands_will_score(tmp_path):
    from advkd.evaluation.suites import DEFAULT_N_EXAMPLES
    from advkd.report.plan import table_planner

    def sizes(**kw):
        planner, _ = table_planner("table2", preset="paper", runs_dir=tmp_path, only={"student": "resnet18", "teacher": "wrn34-10"}, **kw)
        return {j.work.n_examples for j in planner.pending() if isinstance(j.work, AttackWork)}

    assert sizes() == {DEFAULT_N_EXAMPLES}  # no --n-examples: the attack command's own default, not the whole test set
    assert sizes(n_examples=0) == {0} and sizes(n_examples=200) == {200}
