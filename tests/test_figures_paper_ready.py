"""Paper-ready figures (issue 26 item 4): embedded fonts, text kept as text, --size / --title /
--label, readable default legend labels, and fig2 without runs of ours."""
from __future__ import annotations

import json
import re
import struct

import pytest
from test_bad_inputs import refused_line
from test_figures import record, tiny_model, write_records

from advkd.cli import main
from advkd.models.checkpoint import save_checkpoint
from advkd.report.figures import render_figure
from advkd.report.figures.style import SIZES, FigureOptions
from advkd.report.figures.weight_loss import legend_labels, plot_landscape
from advkd.report.landscape import LandscapeResult


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def svg_texts(path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())


def svg_width_in(path) -> float:
    return float(re.search(r'<svg[^>]*\swidth="([0-9.]+)pt"', path.read_text()).group(1)) / 72


def sweep(runs, scale="paper"):
    """Records of an AdaAD eps sweep (two teachers, three training eps) in ``runs``."""
    recs = []
    for teacher in ("wrn34-10", "wrn34-20"):
        t = {"teacher": {"arch": teacher, "paper_arch": teacher}}
        for k, eps in enumerate(("8/255", "16/255", "32/255")):
            recs += [record("clean", 80.0 - k, ckpt=f"{teacher}-{k}", teachers=t, train_eps=eps, scale=scale),
                     record("aa", 50.0 + k, ckpt=f"{teacher}-{k}", teachers=t, train_eps=eps, scale=scale)]
    write_records(runs, recs)


def bmtard_run(root):
    """A B-MTARD run dir with three epochs of metrics (no training: the figure only reads them)."""
    run = root / "runs" / "distill" / "synthetic" / "r"
    run.mkdir(parents=True)
    keys = ("train_loss", "train_loss_adv", "train_loss_nat", "train_r_adv", "train_r_nat", "train_entropy_adv",
            "train_entropy_nat", "train_tau_adv", "train_tau_nat", "train_w_adv", "train_w_nat")
    rows = [{"epoch": e, **{k: 1.0 / e + i / 10 for i, k in enumerate(keys)}} for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text("name: r\nmethod: bmtard\narch: resnet18\n")
    return run


def landscape_results():
    settings = {"directions": 2, "attack": "fgsm", "eps": "8/255", "n_examples": 8}
    curve = [[2.0, 1.0, 2.5], [3.0, 1.0, 2.0]]
    return [LandscapeResult("a/pgd.safetensors", "pgd-at tinycnn epoch 3", [-1.0, 0.0, 1.0], curve, 1.25,
                            dict(settings, method="pgd-at", arch="resnet18", epoch=3)),
            LandscapeResult("b/akd.safetensors", "akd resnet8 for resnet18 (mini) epoch 2", [-1.0, 0.0, 1.0], curve, 1.25,
                            dict(settings, method="akd", arch="resnet8", paper_arch="resnet18", epoch=2))]


# ----------------------------------------------------------------------------- fonts


def test_pdfs_embed_truetype_and_no_type3_fonts(tmp_path):
    sweep(tmp_path)
    render_figure("fig2", runs_dir=tmp_path, out=tmp_path / "fig2.pdf")
    run = bmtard_run(tmp_path)  # mathtext legend labels (tau_adv, L_adv) are glyphs too
    render_figure("bmtard-fig6", runs_dir=tmp_path / "runs", out=tmp_path / "b6.pdf", run=run)
    plot_landscape(landscape_results(), tmp_path / "land.pdf")
    for name in ("fig2.pdf", "b6.pdf", "land.pdf"):
        pdf = (tmp_path / name).read_bytes()
        assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf, name  # embedded TrueType
        assert b"/Type3" not in pdf and b"/Subtype /Type3" not in pdf, name


def test_svg_keeps_title_and_labels_as_text(tmp_path, capsys):
    sweep(tmp_path)
    out = tmp_path / "fig2.svg"
    assert main(["report", "fig2", "--out", str(out), "--runs-dir", str(tmp_path), "--title", "Accuracy vs training budget",
                 "--label", "1=AdaAD (WRN-34-10)", "--label", "wrn34-20=AdaAD (WRN-34-20)"]) == 0
    texts = svg_texts(out)
    assert "Accuracy vs training budget" in texts
    assert "AdaAD (WRN-34-10)" in texts and "AdaAD (WRN-34-20)" in texts
    assert "teacher WRN-34-10 (paper)" in texts  # the curves not relabelled keep their default labels
    assert not re.search(r"<path[^>]*id=\"DejaVu", out.read_text())  # glyphs are not drawn as outlines


# ----------------------------------------------------------------------------- --title, --label, --size


def test_title_and_labels_reach_the_figure_and_its_json(tmp_path, capsys):
    run = bmtard_run(tmp_path)
    out = tmp_path / "b4.svg"
    assert main(["report", "bmtard-fig4", "--run", str(run), "--out", str(out), "--runs-dir", str(tmp_path),
                 "--title", "", "--label", "train_r_adv=robust", "--label", "2=adv. loss = KL"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    labels = {s["id"]: s["label"] for p in doc["panels"] for s in p["series"]}
    assert labels["train_r_adv"] == "robust" and labels["train_loss_adv"] == "adv. loss = KL"  # TEXT may hold '='
    assert doc["title"] == "" and "B-MTARD Fig. 4" not in out.read_text()  # --title '' drops the title
    assert {"robust", "adv. loss = KL"} <= set(svg_texts(out))
    # the landscape: --title and --label by position
    data = plot_landscape(landscape_results(), tmp_path / "l.svg", options=FigureOptions(title="Flatness", labels=("2=Ours",)))
    assert data["title"] == "Flatness" and data["labels"] == ["PGD-AT, ResNet-18", "Ours"]
    assert {"Flatness", "Ours", "PGD-AT, ResNet-18"} <= set(svg_texts(tmp_path / "l.svg"))


def test_size_sets_the_printed_width(tmp_path):
    sweep(tmp_path)
    widths = {}
    for size in SIZES:
        png, svg = tmp_path / f"{size}.png", tmp_path / f"{size}.svg"
        for out in (png, svg):
            data = render_figure("fig2", runs_dir=tmp_path, out=out, options=FigureOptions(size=size))
        assert data["size"] == size
        widths[size] = svg_width_in(svg)
        assert widths[size] == pytest.approx(SIZES[size].width, abs=0.01)
        w, h = png_size(png)
        assert w == pytest.approx(SIZES[size].width * 300, abs=2) and h < w  # 300 dpi at the printed size
    assert widths["column"] == pytest.approx(3.5, abs=0.01) and widths["page"] == pytest.approx(7.16, abs=0.01)
    # the default is one column
    render_figure("fig2", runs_dir=tmp_path, out=tmp_path / "d.svg")
    assert svg_width_in(tmp_path / "d.svg") == pytest.approx(3.5, abs=0.01)


def test_landscape_command_takes_size_title_and_labels(tmp_path, capsys):
    ckpt = tmp_path / "adaad.safetensors"
    save_checkpoint(ckpt, tiny_model(0), {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "method": "adaad", "epoch": "5"})
    out = tmp_path / "land.png"
    args = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path), "landscape", str(ckpt), "--directions", "2",
            "--points", "3", "--n-examples", "8", "--attack", "fgsm", "--out", str(out), "--size", "page"]
    assert main([*args, "--title", "Landscape", "--label", f"{ckpt}=AdaAD student"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["labels"] == ["AdaAD student"] and doc["title"] == "Landscape" and doc["size"] == "page"
    assert png_size(out)[0] == pytest.approx(7.16 * 300, abs=2)
    assert main(args[:-2]) == 0  # defaults: one column, the method and network as the paper writes them
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["labels"] == ["AdaAD, TinyCNN"] and png_size(out)[0] == pytest.approx(3.5 * 300, abs=2)


# ----------------------------------------------------------------------------- default labels


def test_default_legend_labels_are_method_and_network_not_run_names():
    results = landscape_results()
    assert legend_labels(results) == ["PGD-AT, ResNet-18", "AKD, ResNet-8"]  # no "for resnet18 (mini)", no sharpness
    twins = [results[0], LandscapeResult("c/pgd-e9.safetensors", "x", [0.0], [[1.0]], 0.0, dict(results[0].settings, epoch=9))]
    assert legend_labels(twins) == ["PGD-AT, epoch 3", "PGD-AT, epoch 9"]  # the epoch only where needed; the shared network ...
    assert legend_labels(twins[:1]) == ["PGD-AT, ResNet-18"]


def test_a_network_all_curves_share_is_named_once_in_the_title(tmp_path):
    results = landscape_results()
    twins = [results[0], LandscapeResult("c/pgd-e9.safetensors", "x", [-1.0, 0.0, 1.0], [[2.0, 1.0, 2.0]], 1.0, dict(results[0].settings, epoch=9))]
    data = plot_landscape(twins, tmp_path / "l.svg")
    assert data["title"] == "Weight-loss landscape, ResNet-18 (FGSM, \u03b5 = 8/255)"  # ... is in the title
    assert data["title"] in " ".join(svg_texts(tmp_path / "l.svg"))  # one line, or wrapped into two
    assert plot_landscape(results, tmp_path / "m.svg")["title"] == "Weight-loss landscape (FGSM, \u03b5 = 8/255)"


# ----------------------------------------------------------------------------- fig2 without runs of ours


def test_fig2_with_unrelated_records_draws_the_papers_points_and_names_the_plan(tmp_path, capsys):
    write_records(tmp_path, [record("aa", 44.0, ckpt="rslad", method="rslad", train_eps=None),
                             record("clean", 81.0, ckpt="rslad", method="rslad", train_eps=None)])
    out = tmp_path / "fig2.png"
    assert main(["report", "fig2", "--out", str(out), "--runs-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert "report fig2 --plan" in printed.out and "for E in" not in printed.out + printed.err
    assert png_size(out)[0] > 0
    doc = json.loads(out.with_suffix(".json").read_text())
    (panel,) = doc["panels"]  # only panels with data: the paper prints AA points, no clean ones
    assert panel["ylabel"] == "accuracy (%)" and panel["paper"] and all(50 < y < 55 for s in panel["paper"] for y in s["y"])


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("label,expect", [
    ("9=nine", "the figure has no curve 9; its curves are 1 = wrn34-10 'teacher WRN-34-10'; 2 = wrn34-20"),
    ("wrn70-16=x", "the figure has no curve wrn70-16"),
    ("no-equals-sign", "is not CURVE=TEXT"),
    ("1=", "is not CURVE=TEXT"),
])
def test_bad_label_is_refused_on_one_line(tmp_path, capsys, label, expect):
    sweep(tmp_path)
    out = tmp_path / "f.png"
    line = refused_line(label, ["report", "fig2", "--out", str(out), "--runs-dir", str(tmp_path), "--label", label], capsys)
    assert expect in line
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_figure_options_are_refused_before_any_work(tmp_path, capsys):
    # a label naming no checkpoint: refused before the (missing) checkpoint is even read
    line = refused_line("landscape-label", ["landscape", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "l.png"),
                                            "--label", "2=second"], capsys)
    assert "no curve 2" in line
    line = refused_line("twice", ["landscape", "a.safetensors", "--out", str(tmp_path / "l.png"), "--label", "1=x", "--label", "a.safetensors=y"], capsys)
    assert "labelled twice" in line
    line = refused_line("table-title", ["report", "table2", "--title", "T", "--runs-dir", str(tmp_path)], capsys)
    assert "--size, --title and --label are for figures" in line


def test_a_reduced_scale_landscape_says_so_on_the_figure(tmp_path):
    """A mini checkpoint's landscape carries the 'mini scale' line (the JSON's warning), also when
    redrawn from a JSON whose settings carry the scale; a checkpoint without one carries none."""
    ckpt = tmp_path / "rslad.safetensors"
    save_checkpoint(ckpt, tiny_model(0), {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "method": "rslad", "scale": "mini"})
    out = tmp_path / "land.png"
    args = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path), "landscape", str(ckpt), "--directions", "1",
            "--points", "3", "--n-examples", "8", "--attack", "clean", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["warning"] == "mini scale: not comparable to the paper" and doc["results"][0]["settings"]["scale"] == "mini"
    save_checkpoint(ckpt, tiny_model(0), {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "method": "rslad"})
    assert main(args) == 0
    assert json.loads(out.with_suffix(".json").read_text())["warning"] == ""
