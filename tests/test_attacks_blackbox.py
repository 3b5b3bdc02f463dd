"""Tests of AutoAttack (and its components), Square, RayS, JSMA and the gradient-estimation attack.

Same tiny undefended model as tests/test_attacks.py (an MLP with a BatchNorm on 3x8x8 images of
10 separable classes, trained by tests/tiny_nets.py in ~1 s), few examples, budgets cut where the defaults would
be slow; the default settings themselves are checked on params, not by running them.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkd.attacks import ATTACKS, build, projected_gradient, training_mode
from advkd.attacks.autoattack import STATE_FILE
from advkd.attacks.jsma import JSMA
from advkd.attacks.spsa import format_samples_schedule, parse_samples_schedule, samples_at
from advkd.core.errors import AdvkdError

from tiny_nets import CLASSIFIER_C, CLASSIFIER_SHAPE, trained_classifier

pyautoattack = pytest.importorskip("pyautoattack")

EPS = 8 / 255
C, SHAPE = CLASSIFIER_C, CLASSIFIER_SHAPE  # 10 classes of (3, 8, 8) images
D = 3 * 8 * 8
AA_N, AA_BS = 24, 8  # AutoAttack: 3 library batches, so batch composition matters


@pytest.fixture(scope="module")
def data_model():
    """(model in eval mode, x_test, y_test): clean accuracy ~1.0, no parameter grads."""
    return trained_classifier(n_test=64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), training_mode(model, train=False):
        return (model(x).argmax(1) == y).float().mean().item()


def _no_grads(model: nn.Module) -> bool:
    return all(p.grad is None for p in model.parameters())


def _in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float = EPS) -> bool:
    return (x_adv - x).abs().max().item() <= eps + 1e-6 and x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


class Counting(nn.Module):
    """Wraps a model; records the batch size of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows: list[int] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.rows.append(z.shape[0])
        return self.model(z)


class LabelOnly(nn.Module):
    """Exposes only the predicted class (one-hot): a hard-label oracle."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.model(z).argmax(1), C).float()


def test_tiny_model_is_accurate(data_model):
    model, x, y = data_model
    assert accuracy(model, x, y) >= 0.95


def test_registry_kinds_threat_models_and_defaults():
    kinds = {n: ATTACKS.entry(n).meta.get("kind") for n in ["aa", "apgd-ce", "apgd-t", "fab-t", "aa-square",
                                                            "square", "rays", "jsma", "spsa"]}
    assert kinds == {
        "aa": "white-box", "apgd-ce": "white-box", "apgd-t": "white-box", "fab-t": "white-box",
        "aa-square": "score-based", "square": "score-based", "rays": "decision-based", "jsma": "white-box",
        "spsa": "gradient-estimation",
    }
    assert build("aa").params == {"version": "standard", "norm": "Linf", "seed": 0, "batch_size": 500}
    assert build("aa", norm="l2", eps=0.5).threat_model == "L2"
    assert build("square").params == {"n_queries": 100, "p_init": 0.8, "n_restarts": 1, "resc_schedule": True, "seed": 0}
    assert build("rays").params == {"query_limit": 100, "tol": 1e-3, "strict_budget": False}
    jsma = build("jsma")
    assert jsma.params == {"theta": 8 / 255, "gamma": 0.05, "mode": "paper", "seed": 0}
    assert jsma.eps is None and jsma.threat_model == "L0"
    with pytest.raises(AdvkdError, match="takes no eps"):
        build("jsma", eps="8/255")
    spsa = build("spsa")
    assert spsa.params["samples_schedule"] == "100@0,1000@20,20000@40"
    assert spsa.params["iterations"] == 100 and spsa.params["sigma"] == 8 / 255 and spsa.params["step_size"] == 0.01
    assert spsa.params["estimator"] == "gaussian" and spsa.eps.value == 8 / 255
    with pytest.raises(AdvkdError, match="paper, targeted-random, untargeted"):
        build("jsma", mode="random")
    with pytest.raises(AdvkdError, match="standard, rand, plus"):
        build("aa", version="fast")
    with pytest.raises(AdvkdError, match="no parameter"):
        build("apgd-ce", version="plus")  # a component fixes its stage
    for name in ["aa", "apgd-ce", "apgd-t", "fab-t", "aa-square", "square", "rays", "jsma", "spsa"]:
        record = build(name).to_dict()
        assert json.loads(json.dumps(record)) == record
        doc = ATTACKS.get(name).__doc__
        assert "Norm" in doc and "[0, 1]" in doc and "Default" in doc


# ------------------------------------------------------------------------------ AutoAttack


@pytest.fixture(scope="module")
def aa_reference(data_model):
    """One uninterrupted ``aa`` run (ours) on AA_N points, and its output."""
    model, x, y = data_model
    attack = build("aa", eps="8/255", batch_size=AA_BS)
    x_adv = attack(model, x[:AA_N], y[:AA_N])
    return attack, x_adv


def test_aa_equals_a_direct_library_call(data_model, aa_reference):
    model, x, y = data_model
    xs, ys = x[:AA_N], y[:AA_N]
    attack, x_adv = aa_reference
    assert _no_grads(model)  # FAB's .backward() ran with frozen parameters
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="standard", device=xs.device, seed=0)
    with training_mode(model, train=False):
        x_lib, y_lib = adversary.run_standard_evaluation(xs, ys, batch_size=AA_BS)
    for p in model.parameters():  # the direct call leaves FAB's parameter grads behind
        p.grad = None
    assert torch.equal(attack.stage_flags["square"], y_lib == ys)
    assert torch.equal(x_adv, x_lib)
    assert _in_ball(x_adv, xs)


def test_aa_stage_accuracies(data_model, aa_reference):
    model, x, y = data_model
    attack, x_adv = aa_reference
    acc = attack.stage_accuracy
    assert list(acc) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    values = list(acc.values())
    assert all(b <= a for a, b in zip(values, values[1:]))
    final = accuracy(model, x_adv, y[:AA_N])
    assert values[-1] == pytest.approx(final)
    assert 0 < final < values[0] - 0.3  # breaks the undefended model, not every point
    flags = list(attack.stage_flags.values())
    assert all(bool((later <= earlier).all()) for earlier, later in zip(flags, flags[1:]))  # robust sets shrink
    assert all(f.dtype == torch.bool and f.shape == (AA_N,) for f in flags)


def test_aa_keeps_the_callers_rng_and_modes(data_model):
    model, x, y = data_model
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    m = copy.deepcopy(model)
    m.train()
    seen = []
    m.register_forward_pre_hook(lambda mod, inp: seen.append(mod[2].training))
    build("apgd-ce", batch_size=AA_BS)(m, x[:AA_N], y[:AA_N])
    assert torch.equal(torch.rand(5), expected)
    assert all(sub.training for sub in m.modules())  # modes restored
    assert seen and not any(seen)  # every forward ran in eval mode
    assert _no_grads(m) and all(p.requires_grad for p in m.parameters())


def test_aa_component_matches_the_first_stage_and_uses_standard_settings(data_model, aa_reference):
    model, x, y = data_model
    attack, _ = aa_reference
    comp = build("apgd-ce", eps="8/255", batch_size=AA_BS)
    comp(model, x[:AA_N], y[:AA_N])
    assert list(comp.stage_flags) == ["clean", "apgd-ce"]
    assert torch.equal(comp.stage_flags["apgd-ce"], attack.stage_flags["apgd-ce"])
    standard = build("aa").build_adversary(model, torch.device("cpu"))
    for name in ["apgd-ce", "apgd-t", "fab-t", "aa-square"]:
        adv = build(name).build_adversary(model, torch.device("cpu"))
        assert adv.attacks_to_run == [name.replace("aa-", "")]
        assert adv.apgd.n_restarts == standard.apgd.n_restarts == 1
        assert adv.apgd_targeted.n_target_classes == standard.apgd_targeted.n_target_classes == 9
        assert adv.apgd_targeted.n_restarts == 1 and adv.fab.n_restarts == 1
        assert adv.fab.n_target_classes == 9 and adv.square.n_queries == standard.square.n_queries == 5000
        assert adv.square.p_init == 0.8 and adv.square.rescale_schedule is False
        assert adv.device == torch.device("cpu") and adv.seed == 0
    assert standard.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]


def test_aa_skips_everything_when_nothing_is_correct(data_model, monkeypatch):
    model, x, y = data_model
    calls = []
    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", lambda *a, **k: calls.append(1))
    wrong = (y[:8] + 1) % C
    with torch.no_grad():
        wrong = torch.where(model(x[:8]).argmax(1) == wrong, (wrong + 1) % C, wrong)
    attack = build("aa")
    out = attack(model, x[:8], wrong)
    assert not calls and torch.equal(out, x[:8])
    assert set(attack.stage_accuracy.values()) == {0.0}


def test_aa_resumes_after_an_interruption(data_model, aa_reference, monkeypatch, tmp_path):
    model, x, y = data_model
    xs, ys = x[:AA_N], y[:AA_N]
    reference, ref_adv = aa_reference
    original = pyautoattack.AutoAttack.run_standard_evaluation
    calls: list[str] = []
    fail_at = {"stage": "apgd-t"}

    def recording(self, *args, **kwargs):
        stage = self.attacks_to_run[0]
        calls.append(stage)
        if stage == fail_at["stage"]:
            raise RuntimeError("interrupted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", recording)
    state = tmp_path / STATE_FILE
    with pytest.raises(RuntimeError, match="interrupted"):
        build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))(model, xs, ys)
    assert calls == ["apgd-ce", "apgd-t"]
    from safetensors import safe_open

    with safe_open(str(state), framework="pt") as f:
        meta = f.metadata()
        assert json.loads(meta["done"]) == ["apgd-ce"]
        assert torch.equal(f.get_tensor("robust/apgd-ce"), reference.stage_flags["apgd-ce"])
    assert {meta[k] for k in ("version", "norm", "seed", "n")} == {"standard", "Linf", "0", str(AA_N)}
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # atomic: no temp file left

    calls.clear()
    fail_at["stage"] = None
    resumed = build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))
    out = resumed(model, xs, ys)
    assert calls == ["apgd-t", "fab-t", "square"]  # apgd-ce was not run again
    assert torch.equal(out, ref_adv)
    assert resumed.stage_accuracy == reference.stage_accuracy
    assert all(torch.equal(resumed.stage_flags[k], reference.stage_flags[k]) for k in reference.stage_flags)

    calls.clear()  # a finished state: nothing left to run, same answer
    again = build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))
    assert torch.equal(again(model, xs, ys), ref_adv) and not calls

    with pytest.raises(AdvkdError, match="other inputs"):
        build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))(model, x[1 : AA_N + 1], y[1 : AA_N + 1])
    with pytest.raises(AdvkdError, match="seed"):
        build("aa", eps="8/255", batch_size=AA_BS, seed=1, state_dir=str(tmp_path))(model, xs, ys)
    with pytest.raises(AdvkdError, match="eps"):
        build("aa", eps="4/255", batch_size=AA_BS, state_dir=str(tmp_path))(model, xs, ys)
    assert "state_dir" not in resumed.params


@pytest.mark.parametrize("damage", ["a stage's flag flipped", "a stage added to done", "x_adv changed", "seal removed"])
def test_a_damaged_aa_state_is_refused_not_resumed(data_model, monkeypatch, tmp_path, damage):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model, x, y = data_model
    xs, ys = x[:AA_N], y[:AA_N]
    original = pyautoattack.AutoAttack.run_standard_evaluation

    def stop_at_apgd_t(self, *args, **kwargs):
        if self.attacks_to_run[0] == "apgd-t":
            raise RuntimeError("interrupted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", stop_at_apgd_t)
    with pytest.raises(RuntimeError, match="interrupted"):
        build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))(model, xs, ys)
    path = tmp_path / STATE_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    if damage == "a stage's flag flipped":
        tensors["robust/apgd-ce"] = ~tensors["robust/apgd-ce"] if tensors["robust/apgd-ce"].dtype == torch.bool else 1 - tensors["robust/apgd-ce"]
    elif damage == "a stage added to done":
        meta["done"] = json.dumps(["apgd-ce", "apgd-t"])
    elif damage == "x_adv changed":
        tensors["x_adv"] = tensors["x_adv"].clone().fill_(0.5)
    else:
        meta.pop("state_sha256")
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(AdvkdError, match="cannot be trusted"):
        build("aa", eps="8/255", batch_size=AA_BS, state_dir=str(tmp_path))(model, xs, ys)


# ------------------------------------------------------------------------------ Square


def test_square_stays_in_ball_and_breaks_the_model(data_model):
    model, x, y = data_model
    x_in = x.clone()
    x_adv = build("square")(model, x, y)  # the B-MTARD setting: 100 queries
    assert torch.equal(x, x_in) and _in_ball(x_adv, x)
    assert accuracy(model, x_adv, y) <= accuracy(model, x, y)
    strong = build("square", n_queries=2000)(model, x, y)
    assert _in_ball(strong, x)
    assert accuracy(model, strong, y) < accuracy(model, x, y) - 0.2
    assert _no_grads(model)


def test_square_counts_the_init_as_a_query_then_runs_n_queries_iterations(data_model):
    model, x, y = data_model
    with torch.no_grad():
        margins = model(x).gather(1, y[:, None]).squeeze(1) - model(x).scatter(1, y[:, None], -1e9).max(1).values
    i = int(margins.argmax())  # the most robust point: never fooled within 20 queries
    m = Counting(model)
    build("square", n_queries=20)(m, x[i : i + 1], y[i : i + 1])
    # 1 clean check + 1 init (the library's query 1) + 20 iterations + 1 final check
    assert m.rows == [1] * 23


def test_square_is_seeded_and_keeps_the_callers_rng(data_model):
    model, x, y = data_model
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    a = build("square", n_queries=500)(model, x, y)
    assert torch.equal(torch.rand(4), expected)
    assert not torch.equal(a, x)
    assert torch.equal(a, build("square", n_queries=500)(model, x, y))
    assert not torch.equal(a, build("square", n_queries=500, seed=1)(model, x, y))


# ------------------------------------------------------------------------------ RayS


def test_rays_stays_in_ball_breaks_the_model_and_returns_clean_x_on_failure(data_model):
    model, x, y = data_model
    attack = build("rays", query_limit=1000)
    x_adv = attack(model, x, y)
    assert _in_ball(x_adv, x)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.2
    success = attack.distance <= EPS
    assert torch.equal(x_adv[~success], x[~success])  # not broken within eps: the exact clean image
    with torch.no_grad():
        assert (model(x_adv[success]).argmax(1) != y[success]).all()
    assert (attack.distance[~success] > EPS).all()


def test_rays_uses_hard_labels_only(data_model):
    model, x, y = data_model
    a = build("rays", query_limit=200)(model, x[:16], y[:16])
    b = build("rays", query_limit=200)(LabelOnly(model), x[:16], y[:16])
    assert torch.equal(a, b)


def test_rays_respects_the_query_budget(data_model):
    model, x, y = data_model
    m = Counting(model)
    attack = build("rays", query_limit=100, strict_budget=True)
    attack(m, x[:16], y[:16])
    assert sum(m.rows) == int(attack.queries.sum())
    assert (attack.queries == 100).all()  # no early stop: every example uses its budget exactly

    m.rows.clear()
    reference = build("rays")  # default: a binary search started under the limit finishes
    reference(m, x[:16], y[:16])
    assert sum(m.rows) == int(reference.queries.sum())
    assert (reference.queries >= 100).all()
    assert (reference.queries <= 100 + math.ceil(math.log2(math.sqrt(D) / 1e-3)) + 1).all()

    for i in range(2):  # one example at a time: the model calls themselves are the count
        m.rows.clear()
        single = build("rays", query_limit=30, strict_budget=True)
        single(m, x[i : i + 1], y[i : i + 1])
        assert m.rows == [1] * 30


# ------------------------------------------------------------------------------ JSMA


def _mixed_batch(model, x, y):
    """Half clean (correct), half PGD-adversarial (mostly misclassified)."""
    torch.manual_seed(0)
    adv = projected_gradient(lambda z: F.cross_entropy(model(z), y[:16]), x[:16], eps=EPS, step_size=2 / 255, steps=10)
    return torch.cat([adv, x[16:32]]), y[:32]


def test_jsma_paper_mode_leaves_correct_points_and_never_lowers_accuracy(data_model):
    model, x, y = data_model
    xm, ym = _mixed_batch(model, x, y)
    with torch.no_grad():
        correct = model(xm).argmax(1) == ym
    assert 0 < correct.sum() < len(ym)
    out = build("jsma", theta=1.0)(model, xm, ym)
    assert torch.equal(out[correct], xm[correct])  # targets = true labels: nothing to do
    assert accuracy(model, out, ym) >= accuracy(model, xm, ym)
    assert (out[~correct] != xm[~correct]).any()  # misclassified points are pushed toward y
    assert _no_grads(model)


@pytest.mark.parametrize("mode", ["targeted-random", "untargeted"])
def test_jsma_real_modes_reduce_accuracy_within_the_l0_budget(data_model, mode):
    model, x, y = data_model
    attack = build("jsma", mode=mode, theta=1.0)
    out = attack(model, x, y)
    max_iters = int(D * 0.05 / 2)
    changed = (out != x).flatten(1).sum(1)
    assert changed.max().item() <= 2 * max_iters and attack.iterations <= max_iters
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert accuracy(model, out, y) < accuracy(model, x, y) - 0.3
    if mode == "targeted-random":
        assert (attack.targets != y).all()
        again = build("jsma", mode=mode, theta=1.0)
        again(model, x[:4], y[:4])
        assert torch.equal(again.targets, attack.targets[:4])  # seeded targets
        with torch.no_grad():
            hit = model(out).argmax(1) == attack.targets
        assert hit.float().mean() > 0.2
    assert _no_grads(model)


def test_jsma_default_budget_is_small(data_model):
    model, x, y = data_model
    xm, ym = _mixed_batch(model, x, y)
    out = build("jsma", mode="untargeted")(model, xm, ym)  # theta 8/255, gamma 0.05
    assert (out != xm).flatten(1).sum(1).max().item() <= 2 * int(D * 0.05 / 2)


def test_jsma_pair_search_matches_brute_force(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    k, d = 5, 12
    a, b = torch.randn(k, d, generator=gen), torch.randn(k, d, generator=gen)
    search = torch.rand(k, d, generator=gen) > 0.3
    search[4] = False  # no admissible pair at all
    for increase in (True, False):
        p1, p2, valid = JSMA._best_pairs(search, a, b, increase)
        for r in range(k):
            best, arg = 0.0, None
            for i in range(d):
                for j in range(d):
                    if i == j or not (search[r, i] and search[r, j]):
                        continue
                    sa, sb = a[r, i] + a[r, j], b[r, i] + b[r, j]
                    ok = (sa > 0 and sb < 0) if increase else (sa < 0 and sb > 0)
                    if ok and -sa * sb > best:
                        best, arg = float(-sa * sb), {i, j}
            assert bool(valid[r]) == (arg is not None)
            if arg is not None:
                assert {int(p1[r]), int(p2[r])} == arg
        monkeypatch.setattr("advkd.attacks.jsma._PAIR_BUDGET", d * d * 2)  # chunks of 2 rows
        q1, q2, qv = JSMA._best_pairs(search, a, b, increase)
        assert torch.equal(q1, p1) and torch.equal(q2, p2) and torch.equal(qv, valid)
        monkeypatch.undo()


def test_jsma_gradients_match_the_full_jacobian(data_model):
    model, x, y = data_model
    xs, t = x[:3].reshape(3, -1), torch.tensor([1, 4, 7])
    g_t, g_o = JSMA._grads(model, xs, t, torch.Size(SHAPE))
    jac = torch.autograd.functional.jacobian(lambda z: model(z.reshape(-1, *SHAPE)), xs)  # (3, C, 3, D)
    per = torch.stack([jac[i, :, i] for i in range(3)])  # (3, C, D)
    assert torch.allclose(g_t, per[torch.arange(3), t], atol=1e-6)
    assert torch.allclose(g_o, per.sum(1) - per[torch.arange(3), t], atol=1e-5)
    assert _no_grads(model)


# ------------------------------------------------------------------------------ gradient estimation


def test_spsa_schedule_parsing():
    assert parse_samples_schedule("100@0,1000@20,20000@40") == [(0, 100), (20, 1000), (40, 20000)]
    sched = parse_samples_schedule(" 100 @ 0 , 1000@20 ")
    assert format_samples_schedule(sched) == "100@0,1000@20"
    assert [samples_at(parse_samples_schedule("100@0,1000@20,20000@40"), i) for i in (0, 19, 20, 39, 40, 99)] == [
        100, 100, 1000, 1000, 20000, 20000,
    ]
    for bad in ["", "100", "100@5", "100@0,50@0", "100@0,50@-1", "1@0", "a@0", "100@0;1000@20", "100@0,1000@10,5@5"]:
        with pytest.raises(AdvkdError, match="samples@start_iteration"):
            parse_samples_schedule(bad)
    assert build("spsa", samples_schedule="10@0, 20@3").params["samples_schedule"] == "10@0,20@3"
    assert "samples_schedule" in build("spsa", samples_schedule="10@0").given
    with pytest.raises(AdvkdError, match="samples@start_iteration"):
        build("spsa", samples_schedule="10@3")


@pytest.mark.parametrize("estimator", ["gaussian", "rademacher"])
def test_spsa_breaks_the_model_in_the_ball_and_stops_early(data_model, estimator):
    model, x, y = data_model
    m = Counting(model)
    attack = build("spsa", iterations=30, samples_schedule="20@0,100@5", estimator=estimator, batch_samples=64)
    x_adv = attack(m, x, y)
    assert _in_ball(x_adv, x)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.1
    assert sum(m.rows) == int(attack.queries.sum())
    assert max(m.rows) <= max(64, 2 * len(x))  # probe images per forward bounded
    steps = attack.steps_taken
    # per example: 1 start check, then per step 2*(samples//2) probes + 1 check
    cost = [20 + 1 if i < 5 else 100 + 1 for i in range(30)]
    expected = torch.tensor([1 + sum(cost[: int(s)]) for s in steps])
    assert torch.equal(attack.queries, expected)
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    stopped = steps < 30
    assert stopped.any() and wrong[stopped].all()  # early stop only once misclassified


def test_spsa_leaves_misclassified_points_alone_and_is_seeded(data_model):
    model, x, y = data_model
    with torch.no_grad():
        wrong = (model(x[:8]).argmax(1) + 1) % C
    attack = build("spsa", iterations=3, samples_schedule="10@0")
    out = attack(model, x[:8], wrong)
    assert torch.equal(out, x[:8]) and (attack.queries == 1).all() and (attack.steps_taken == 0).all()
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    a = build("spsa", iterations=3, samples_schedule="10@0")(model, x[:8], y[:8])
    assert torch.equal(torch.rand(2), expected)  # own generator: global RNG untouched
    assert torch.equal(a, build("spsa", iterations=3, samples_schedule="10@0")(model, x[:8], y[:8]))
    assert not torch.equal(a, build("spsa", iterations=3, samples_schedule="10@0", seed=1)(model, x[:8], y[:8]))
