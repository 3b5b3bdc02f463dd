"""AutoAttack says what it is doing: a line as each stage starts (the robust points it attacks) and
ends (how many are still robust), and lines while a stage runs with its progress and the most time
left. The lines change nothing: same flags, same adversarial examples as a silent run.

Tiny undefended MLP of tests/tiny_nets.py on 4 images, three of which survive every stage at
8/255 (seconds); the forward-count bound is checked on the library itself with small budgets."""
from __future__ import annotations

import re
import warnings

import pytest
import torch
from tiny_runs import Capture
from torch import nn

from advkd.attacks import build
from advkd.attacks.aa_progress import PassMeter, stage_forwards
from advkd.attacks.autoattack import _StagedAutoAttack
from advkd.data.batches import TensorData
from advkd.evaluation.evaluate import evaluate

from tiny_nets import trained_classifier

pyautoattack = pytest.importorskip("pyautoattack")
STAGES = ["apgd-ce", "apgd-t", "fab-t", "square"]
PICK = slice(8, 12)  # test points 8..11: one falls to APGD-CE, three survive all four stages
INSIDE = re.compile(r"(?P<stage>[a-z-]+): (?P<done>\d+) of at most (?P<total>\d+) image passes \((?P<pct>\d+)%\) in \S+, at most \S+ left")


@pytest.fixture(scope="module")
def data_model():
    model, x, y = trained_classifier(n_test=64)
    return model, x[PICK], y[PICK]


def test_each_stage_says_when_it_starts_and_ends_and_how_far_it_is(data_model, one_thread):
    model, x, y = data_model
    attack = build("aa", eps="8/255", batch_size=4)
    lines: list[str] = []
    attack.log, attack.heartbeat_s = lines.append, 0.0  # every forward may report: the test sees the in-stage lines
    x_adv = attack(model, x, y)
    silent = build("aa", eps="8/255", batch_size=4)
    assert torch.equal(silent(model, x, y), x_adv)  # reporting changes nothing
    assert all(torch.equal(silent.stage_flags[k], f) for k, f in attack.stage_flags.items())

    flags = attack.stage_flags
    assert int(flags["square"].sum()) >= 1  # every stage ran on some point: all four report
    for number, (before, stage) in enumerate(zip(["clean", *STAGES], STAGES), 1):
        attacked, left = int(flags[before].sum()), int(flags[stage].sum())
        where = f"{stage} (stage {number}/4)"
        start = lines.index(f"{where}: attacking the {attacked} of 4 points still robust")
        end = next(i for i, line in enumerate(lines) if re.fullmatch(rf"{re.escape(where)} in \d+\.\ds: {left} of {attacked} attacked points still robust", line))
        inside = [INSIDE.fullmatch(line) for line in lines[start + 1 : end]]
        assert inside and all(m and m["stage"] == stage for m in inside), lines[start + 1 : end][:3]
        done = [int(m["done"]) for m in inside]
        assert done == sorted(done) and done[-1] <= int(inside[-1]["total"]) and int(inside[-1]["pct"]) <= 100


def test_a_stage_with_no_robust_point_left_says_it_is_skipped(data_model):
    model, x, y = data_model
    attack = build("aa", eps="8/255", batch_size=4)
    lines: list[str] = []
    attack.log = lines.append
    attack(model, x[:1], (y[:1] + 1) % 10)  # a wrong label: nothing is correct, nothing is attacked
    assert lines == [f"{stage} (stage {i}/4): skipped, no point left to attack" for i, stage in enumerate(STAGES, 1)]


@pytest.mark.slow  # a third whole AutoAttack run (~9 s on a 2-core Zen 3): make test-slow
def test_evaluation_passes_the_stage_lines_to_its_reporter(data_model, monkeypatch):
    model, x, y = data_model
    monkeypatch.setattr(_StagedAutoAttack, "heartbeat_s", 0.0)
    reporter = Capture()
    data = TensorData((x * 255).round().to(torch.uint8), y)
    evaluate(model, data, ["clean", "aa"], eps="8/255", batch_size=4, reporter=reporter, attack_params={"aa": {"batch_size": 4}})
    assert any(re.fullmatch(r"aa: apgd-ce \(stage 1/4\): attacking the \d of 4 points still robust", line) for line in reporter.lines)
    assert any(line.startswith("aa: apgd-ce: ") and "of at most" in line for line in reporter.lines)
    assert any(re.match(r"aa: (square \(stage 4/4\) in|square \(stage 4/4\): skipped)", line) for line in reporter.lines)


class Unfoolable(nn.Module):
    """Logits that ignore the input: no stage can break a point, so each takes its full budget."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3 * 8 * 8, 10), requires_grad=False)
        self.b = nn.Parameter(torch.arange(10.0).flip(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_the_forward_bound_is_what_the_library_spends_when_no_point_falls(version, one_thread):
    meter = PassMeter(Unfoolable())
    adversary = pyautoattack.AutoAttack(meter, version=version, norm="Linf", eps=8 / 255, seed=0, device="cpu")
    adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = 4  # small budgets, same structure
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = 2
    adversary.fab.n_iter, adversary.square.n_queries = 3, 10
    x, y = torch.rand(5, 3, 8, 8), torch.zeros(5, dtype=torch.long)  # class 0 has the largest constant logit
    for stage in list(adversary.attacks_to_run):
        adversary.attacks_to_run = [stage]
        before = meter.images
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero gradients, by design
            adversary.run_standard_evaluation(x, y, batch_size=3)
        spent, bound = meter.images - before, stage_forwards(adversary, stage, 5, 3)
        restarts = {"apgd-ce": adversary.apgd.n_restarts, "apgd-dlr": adversary.apgd.n_restarts, "fab": adversary.fab.n_restarts}.get(stage, 1)
        # one run per point: exact; with several restarts the bound may count one spare pass per point and restart
        assert spent == bound if restarts == 1 else spent <= bound <= spent + 5 * restarts, (version, stage, spent, bound)
