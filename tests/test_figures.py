"""Weight-loss landscape (AdaAD Fig. 3) and the report's figures (AdaAD Fig. 2, B-MTARD Figs. 3-6)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from advkd.attacks import build as build_attack
from advkd.core.errors import AdvkdError
from advkd.core.progress import Reporter
from advkd.data.batches import TensorData
from advkd.models import build_model
from advkd.models.checkpoint import save_checkpoint
from advkd.report.figures import FIGURES, render_figure
from advkd.report.figures.weight_loss import plot_landscape
from advkd.report.landscape import (
    LandscapeResult,
    alpha_grid,
    filter_normalized_direction,
    landscape,
    load_landscape,
    sharpness,
    weight_loss_landscape,
)
from advkd.training.config import TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUIET = Reporter(enabled=False)


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def tiny_data(n=10, size=8, seed=0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = build_model("tinycnn", num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


# ----------------------------------------------------------------------------- directions


@pytest.mark.parametrize("bn_bias", ["zero", "copy"])
def test_direction_is_filter_normalised_and_skips_buffers(bn_bias):
    model = tiny_model()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(3), bn_bias=bn_bias)
    params = dict(model.named_parameters())
    assert set(d) == set(params)  # no buffers (BN running stats, num_batches_tracked)
    assert not any("running" in k or "num_batches" in k for k in d)
    for name, w in params.items():
        assert d[name].shape == w.shape and d[name].dtype == w.dtype
        if w.dim() >= 2:
            assert torch.allclose(d[name].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1), rtol=1e-5)
            assert not torch.allclose(d[name], w.detach())  # random, not a copy
        elif bn_bias == "zero":
            assert torch.count_nonzero(d[name]) == 0
        else:
            assert torch.equal(d[name], w.detach())
    with pytest.raises(AdvkdError):
        filter_normalized_direction(model, torch.Generator(), bn_bias="nope")


def test_directions_are_the_same_draws_for_every_checkpoint():
    a, b = tiny_model(0), tiny_model(1)
    da = filter_normalized_direction(a, torch.Generator().manual_seed(5))
    db = filter_normalized_direction(b, torch.Generator().manual_seed(5))
    w = dict(a.named_parameters())
    for name in da:
        if w[name].dim() >= 2:  # same Gaussian rows, only rescaled to each model's filter norms
            ua = da[name].flatten(1) / da[name].flatten(1).norm(dim=1, keepdim=True)
            ub = db[name].flatten(1) / db[name].flatten(1).norm(dim=1, keepdim=True)
            assert torch.allclose(ua, ub, atol=1e-6)


def test_alpha_grid_and_sharpness():
    grid = alpha_grid(1.0, 21)
    assert len(grid) == 21 and grid[0] == -1.0 and grid[-1] == 1.0 and grid[10] == 0.0
    assert grid == pytest.approx(torch.linspace(-1, 1, 21).tolist(), abs=1e-6)
    for bad in (4, 1):
        with pytest.raises(AdvkdError, match="odd"):
            alpha_grid(1.0, bad)
    # direction 1 rises by 3 at its max, direction 2 by 1: mean 2
    assert sharpness([-1.0, 0.0, 1.0], [[4.0, 1.0, 2.0], [2.0, 1.5, 2.5]]) == pytest.approx(2.0)
    assert sharpness([-1.0, 0.0, 1.0], [[1.0, 1.0, 1.0]]) == 0.0


# ----------------------------------------------------------------------------- landscape


def test_landscape_restores_weights_bitwise_and_alpha0_is_the_unperturbed_adversarial_loss():
    model, data = tiny_model(), tiny_data(n=10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    alphas, losses = weight_loss_landscape(model, data, directions=2, points=3, radius=0.5, attack="pgd10",
                                           batch_size=4, seed=11, reporter=QUIET)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # parameters and buffers, bitwise
        assert torch.equal(before[k], after[k]), k
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)  # the attack seed is forked, the caller's RNG untouched
    assert alphas == [-0.5, 0.0, 0.5]
    assert len(losses) == 2 and all(len(c) == 3 for c in losses)
    assert all(math.isfinite(v) for c in losses for v in c)

    # the unperturbed model's adversarial loss with the same attack seed, computed by hand
    model.eval()
    attack = build_attack("pgd10", eps="8/255")
    torch.manual_seed(11)
    total = 0.0
    for b in range(0, len(data), 4):
        x, y = data.images[b:b + 4].float() / 255, data.labels[b:b + 4]
        x_adv = attack(model, x, y)
        with torch.no_grad():
            total += float(F.cross_entropy(model(x_adv), y, reduction="sum"))
    assert losses[0][1] == pytest.approx(total / len(data), rel=1e-6)
    assert losses[1][1] == losses[0][1]
    assert losses[0][0] != losses[0][1] and losses[1][2] != losses[1][1]  # the weights really moved


def test_landscape_of_checkpoints_plot_and_fig3(tmp_path):
    paths = []
    for i, method in enumerate(("pgd-at", "adaad")):
        p = tmp_path / f"{method}.safetensors"
        save_checkpoint(p, tiny_model(i), {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "method": method, "epoch": "99"})
        paths.append(p)
    results = landscape(paths, data_dir=tmp_path, n_examples=6, directions=2, points=3, attack="fgsm", batch_size=8, reporter=QUIET)
    assert [r.label for r in results] == ["pgd-at tinycnn epoch 99", "adaad tinycnn epoch 99"]  # metadata epochs are 1-based, shown as stored
    for r in results:
        assert r.sharpness == pytest.approx(sharpness(r.alphas, r.losses)) and r.sharpness >= 0
        s = r.settings
        assert {k: s[k] for k in ("directions", "points", "radius", "attack", "eps", "n_examples", "seed", "bn_bias")} == {
            "directions": 2, "points": 3, "radius": 1.0, "attack": "fgsm", "eps": "8/255", "n_examples": 6, "seed": 0, "bn_bias": "zero"}
        assert s["data"] == "test first N" and s["dataset"] == "synthetic"
    out = tmp_path / "fig" / "landscape.png"
    plot_landscape(results, out)
    assert_png(out)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["figure"] == "fig3" and len(doc["results"]) == 2
    assert {"checkpoint", "label", "alphas", "losses", "sharpness", "settings"} <= set(doc["results"][0])
    again = load_landscape(out.with_suffix(".json"))
    assert again[1].losses == results[1].losses
    # a diverged point far from the minimum stays strict JSON (null) and loads back as nan / inf sharpness
    diverged = LandscapeResult("x", "diverged", [-1.0, 0.0, 1.0], [[math.inf, 1.0, math.nan]], math.inf, {"attack": "fgsm"})
    plot_landscape([diverged], tmp_path / "d.png")
    back = load_landscape(tmp_path / "d.json")[0]
    assert back.losses[0][0] != back.losses[0][0] and back.losses[0][1] == 1.0 and back.sharpness != back.sharpness
    assert sharpness(diverged.alphas, diverged.losses) == math.inf
    data = render_figure("fig3", runs_dir=tmp_path, out=tmp_path / "fig3.png", run=out.with_suffix(".json"))
    assert_png(tmp_path / "fig3.png")
    assert data["source"] == str(out.with_suffix(".json")) and len(data["results"]) == 2
    with pytest.raises(AdvkdError, match="advkd landscape"):
        render_figure("fig3", runs_dir=tmp_path / "empty", out=tmp_path / "x.png")


# ----------------------------------------------------------------------------- B-MTARD dynamics


@pytest.fixture(scope="module")
def bmtard_runs(tmp_path_factory):
    from advkd.training.loop import run

    root = tmp_path_factory.mktemp("bmtard")
    runs = root / "runs"
    common = dict(arch="tinycnn", dataset="synthetic", epochs=1, batch_size=16, train_subset=16, eval_examples=8,
                  eval_batch_size=8, seed=1, method_params={"steps": 1})
    teachers = {}
    for method, role in (("natural", "clean_teacher"), ("trades", "robust_teacher")):
        params = {} if method == "natural" else {"steps": 1}
        cfg = TrainConfig(kind="pretrain-teacher", method=method, **{**common, "method_params": params})
        teachers[role] = str(run(cfg, runs_dir=runs, data_dir=root, device=torch.device("cpu"), reporter=QUIET).path / "best.safetensors")
    cfg = TrainConfig(kind="distill", method="bmtard", teachers=teachers, **{**common, "epochs": 3})
    summary = run(cfg, runs_dir=runs, data_dir=root, device=torch.device("cpu"), reporter=QUIET)
    return runs, summary.path


@pytest.mark.parametrize("fig,keys", [
    ("bmtard-fig4", ["train_loss", "train_loss_adv", "train_loss_nat", "train_r_adv", "train_r_nat"]),
    ("bmtard-fig5", ["train_entropy_adv", "train_entropy_nat"]),
    ("bmtard-fig6", ["train_tau_adv", "train_tau_nat", "train_w_adv", "train_w_nat"]),
])
def test_bmtard_dynamics_figures_from_a_real_run(tmp_path, bmtard_runs, fig, keys):
    runs, run_path = bmtard_runs
    out = tmp_path / f"{fig}.png"
    data = render_figure(fig, runs_dir=runs, out=out)  # default: the newest bmtard distill run
    assert_png(out)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc == json.loads(json.dumps(data)) and doc["figure"] == fig and doc["run"] == str(run_path)
    assert doc["epochs"] == [1, 2, 3]
    series = {s["key"]: s for p in doc["panels"] for s in p["series"]}
    assert sorted(series) == sorted(keys)
    rows = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    for k in keys:
        assert series[k]["y"] == [r[k] for r in rows]
    if fig == "bmtard-fig6":
        assert set(doc["end_of_epoch_state"]) == {"method_tau_adv", "method_tau_nat", "method_w_adv", "method_w_nat"}
        assert all(abs(a + b - 1) < 1e-9 for a, b in zip(series["train_w_adv"]["y"], series["train_w_nat"]["y"]))
    # an explicit run dir (or its metrics.jsonl) gives the same figure
    assert render_figure(fig, runs_dir=tmp_path, out=tmp_path / "b.png", run=run_path / "metrics.jsonl")["panels"] == data["panels"]


def test_bmtard_dynamics_errors_name_the_command(tmp_path, bmtard_runs):
    runs, _ = bmtard_runs
    with pytest.raises(AdvkdError, match="advkd distill --method bmtard"):
        render_figure("bmtard-fig4", runs_dir=tmp_path, out=tmp_path / "x.png")
    teacher_run = next((runs / "pretrain-teacher" / "synthetic").glob("*trades*"))
    with pytest.raises(AdvkdError, match="train_r_adv"):
        render_figure("bmtard-fig4", runs_dir=runs, out=tmp_path / "x.png", run=teacher_run)
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- records


def record(attack, acc, *, ckpt, method="adaad", student="resnet18", teachers=None, train_eps="8/255", params=None, t=0, **kw):
    rec = {
        "checkpoint": ckpt, "sha256": ckpt, "dataset": "cifar10", "arch": student, "paper_arch": student, "method": method,
        "teachers": teachers if teachers is not None else {"teacher": {"arch": "wrn34-10", "paper_arch": "wrn34-10"}},
        "scale": "paper", "train_eps": train_eps, "method_params": params or {}, "attack": attack, "accuracy": acc,
        "kind": "clean" if attack == "clean" else "white-box", "threat_model": "none" if attack == "clean" else "Linf",
        "eps": None if attack == "clean" else "8/255", "eps_value": None if attack == "clean" else 8 / 255,
        "time": f"2026-01-01T00:00:{t:02d}+0000",
    }
    rec.update(kw)
    return rec


def write_records(runs, recs):
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_fig2_from_records_with_autoattack(tmp_path):
    recs = []
    for teacher, base in (("wrn34-10", 50.0), ("wrn34-20", 52.0)):
        t = {"teacher": {"arch": teacher, "paper_arch": teacher}}
        for k, eps in enumerate(("8/255", "16/255", "32/255")):
            ck = f"{teacher}-{k}"
            recs += [record("clean", 85.0 - 3 * k, ckpt=ck, teachers=t, train_eps=eps),
                     record("aa", base + k, ckpt=ck, teachers=t, train_eps=eps),
                     record("pgd10", base + 5 + k, ckpt=ck, teachers=t, train_eps=eps)]
    recs.append(record("aa", 1.0, ckpt="other", train_eps="8/255", dataset="cifar100"))  # another group, one eps: ignored
    write_records(tmp_path, recs)
    out = tmp_path / "fig2.png"
    data = render_figure("fig2", runs_dir=tmp_path, out=out)
    assert_png(out)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["figure"] == "fig2" and doc["robust_attack"] == "aa" and doc["robust_attack_note"] == ""
    assert {"title", "panels", "dataset", "student", "missing"} <= set(doc)
    clean, rob = doc["panels"]
    assert [s["label"] for s in rob["series"]] == ["teacher WRN-34-10", "teacher WRN-34-20"]
    assert rob["series"][0]["x"] == [8.0, 16.0, 32.0] and rob["series"][0]["y"] == [50.0, 51.0, 52.0]
    assert [s["label"] for s in rob["paper"]] == ["teacher WRN-34-10 (paper)", "teacher WRN-34-20 (paper)"]  # the published points beside ours
    assert [s["match"] for s in rob["paper"]] == ["wrn34-10", "wrn34-20"]  # drawn in the colour of our line with that teacher
    assert clean["series"][1]["y"] == [85.0, 82.0, 79.0]
    assert data["dataset"] == "cifar10" and data["student"] == "resnet18"


def test_fig2_without_autoattack_uses_the_strongest_white_box_attack_and_says_so(tmp_path):
    recs = []
    for k, eps in enumerate(("8/255", "24/255")):
        recs += [record("clean", 80.0, ckpt=f"c{k}", train_eps=eps), record("fgsm", 60.0, ckpt=f"c{k}", train_eps=eps),
                 record("pgd10", 50.0 + k, ckpt=f"c{k}", train_eps=eps)]
    write_records(tmp_path, recs)
    data = render_figure("adaad-fig2", runs_dir=tmp_path, out=tmp_path / "f.png")
    assert data["robust_attack"] == "pgd10"
    assert "AutoAttack records missing" in data["robust_attack_note"] and "strongest" in data["robust_attack_note"]
    assert "no AA records: robust = pgd10" in data["title"]
    assert data["panels"][1]["series"][0]["y"] == [50.0, 51.0]


def test_fig2_without_an_eps_sweep_draws_the_papers_points_and_names_the_plan(tmp_path):
    # no runs at all: the paper's own AA points, one panel (the paper prints no clean numbers), and the plan that adds ours
    data = render_figure("fig2", runs_dir=tmp_path, out=tmp_path / "paper.png")
    assert_png(tmp_path / "paper.png")
    (panel,) = data["panels"]
    assert panel["series"] == [] and [(s["label"], s["x"], s["y"]) for s in panel["paper"]] == [
        ("teacher WRN-34-10 (paper)", [8.0, 32.0], [50.06, 52.86]), ("teacher WRN-34-20 (paper)", [32.0], [54.23])]
    assert panel["ylabel"] == "accuracy (%)" and panel["xticks"] == [8.0, 16.0, 24.0, 32.0]
    assert "advkd report fig2 --plan" in data["notice"] and "advkd report fig2 --plan" in data["missing"][0]
    write_records(tmp_path, [record("clean", 80.0, ckpt="a"), record("aa", 40.0, ckpt="a")])  # one eps only: no sweep either
    data = render_figure("fig2", runs_dir=tmp_path, out=tmp_path / "f.png")
    assert_png(tmp_path / "f.png")
    assert "two or more training eps" in data["notice"] and len(data["panels"]) == 1


def test_bmtard_fig3_ablation_bars(tmp_path):
    teachers = {"clean_teacher": {"paper_arch": "resnet56"}, "robust_teacher": {"paper_arch": "wrn34-10"}}
    variants = {"baseline": {"ebb": False, "nlb": False}, "nlb": {"ebb": "false"}, "ebb": {"nlb": False}, "both": {}}
    recs = []
    for i, (key, params) in enumerate(variants.items()):
        recs += [record("clean", 80.0 + i, ckpt=key, method="bmtard", teachers=teachers, params=params),
                 record("pgd20-sat", 50.0 + i, ckpt=key, method="bmtard", teachers=teachers, params=params),
                 record("aa", 40.0 + i, ckpt=key, method="bmtard", teachers=teachers, params=params)]
    # Table VIII run (nlb_beta 4) and a transfer record: not part of the figure
    recs.append(record("aa", 99.0, ckpt="beta4", method="bmtard", teachers=teachers, params={"nlb_beta": 4}))
    recs.append(record("pgd20-trades", 1.0, ckpt="both", method="bmtard", teachers=teachers, kind="transfer", surrogate={"paper_arch": "x"}))
    write_records(tmp_path, recs)
    out = tmp_path / "b3.png"
    data = render_figure("bmtard-fig3", runs_dir=tmp_path, out=out)
    assert_png(out)
    doc = json.loads(out.with_suffix(".json").read_text())
    panel = doc["panels"][0]
    assert panel["kind"] == "bar" and panel["attacks"] == ["pgd20-sat", "aa"]
    assert [s["variant"] for s in panel["series"]] == ["baseline", "nlb", "ebb", "both"]
    assert panel["series"][0]["y"] == [0.5 * 80 + 0.5 * 50, 0.5 * 80 + 0.5 * 40]
    assert panel["series"][3]["y"] == [0.5 * 83 + 0.5 * 53, 0.5 * 83 + 0.5 * 43]
    assert data["missing_variants"] == []
    # one variant alone is not an ablation
    write_records(tmp_path, [r for r in recs if r["checkpoint"] == "both"])
    with pytest.raises(AdvkdError, match="method.ebb=false"):
        render_figure("bmtard-fig3", runs_dir=tmp_path, out=tmp_path / "x.png")


def test_figure_ids_match_the_report_and_unknown_ids_fail(tmp_path):
    from advkd.report import FIGURE_IDS

    assert set(FIGURES) == set(FIGURE_IDS)
    with pytest.raises(AdvkdError, match="unknown figure"):
        render_figure("table2", runs_dir=tmp_path, out=tmp_path / "x.png")
    with pytest.raises(AdvkdError, match="unknown figure"):
        render_figure("fig9", runs_dir=tmp_path, out=tmp_path / "x.png")


def test_landscape_command_writes_png_json_and_table(tmp_path, capsys):
    """`advkd landscape` end to end on a tiny synthetic checkpoint."""
    from advkd.cli import main

    runs = tmp_path / "runs"
    fast = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "32", "--n-examples", "16", "--batch-size", "16"]
    assert main(["--runs-dir", str(runs), "pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *fast]) == 0
    ckpt = next(runs.glob("pretrain-teacher/synthetic/*/best.safetensors"))
    capsys.readouterr()
    code = main(["--runs-dir", str(runs), "landscape", str(ckpt), "--directions", "2", "--points", "3", "--n-examples", "8", "--attack", "fgsm"])
    assert code == 0
    png = runs / "landscape" / "landscape.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    data = json.loads(png.with_suffix(".json").read_text())
    assert "sharpness" in capsys.readouterr().out
    assert data


def test_figures_are_written_as_vector_pdf_and_svg_and_say_their_reduced_scale(tmp_path, capsys):
    from advkd.cli import main

    recs = []
    t = {"teacher": {"arch": "resnet14", "paper_arch": "wrn34-10"}}
    for k, eps in enumerate(("8/255", "16/255")):
        recs += [record("clean", 40.0 - k, ckpt=f"c{k}", teachers=t, train_eps=eps, scale="small"),
                 record("aa", 20.0 + k, ckpt=f"c{k}", teachers=t, train_eps=eps, scale="small")]
    write_records(tmp_path, recs)
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<svg")):
        out = tmp_path / f"fig2{suffix}"
        data = render_figure("fig2", runs_dir=tmp_path, out=out)
        assert magic in out.read_bytes()[:400] and data["scale"] == "small" and "Scale small" in data["warning"]
    pdf = (tmp_path / "fig2.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # embedded TrueType, no Type 3 (publishers' checkers reject it)
    assert b"<text" in (tmp_path / "fig2.svg").read_bytes()  # SVG text stays text
    assert main(["report", "fig2", "--out", str(tmp_path / "fig2.jpg"), "--runs-dir", str(tmp_path)]) == 2
    assert "suffix must be one of .png, .pdf, .svg" in capsys.readouterr().err
    assert main(["report", "fig2", "--format", "pdf", "--out", str(tmp_path / "f.png"), "--runs-dir", str(tmp_path)]) == 2
    assert main(["report", "fig2", "--format", "svg", "--out", str(tmp_path / "f.svg"), "--runs-dir", str(tmp_path)]) == 0
