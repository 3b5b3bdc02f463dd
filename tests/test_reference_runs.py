"""The reference-run harness (benchmarks/reference_runs): anchor edits, the pinned checkout, the
host's shims (same images as advkd, .cuda() on a CPU, the script's own modules cleaned up), a
whole edited script run end to end, and the side-by-side table with its test."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package
from advkd.core.accel import FastPaths  # noqa: E402
from advkd.data.loaders import load_split  # noqa: E402
from advkd.training.config import TrainConfig, resolve_config  # noqa: E402
from advkd.training.loop import prepare  # noqa: E402
from benchmarks.reference_runs import compare, run  # noqa: E402
from benchmarks.reference_runs.catalog import REFERENCES, Reference  # noqa: E402
from benchmarks.reference_runs.edits import Edit, EditError, apply_edits  # noqa: E402
from benchmarks.reference_runs.host import Host, offline_cifar10  # noqa: E402


def write_cifar10(root: Path, per_batch: int = 6) -> Path:
    """A CIFAR-10 folder both torchvision and advkd read (str keys, batches.meta), distinct images."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": [int(x) for x in rng.integers(0, 10, per_batch)]}
        (d / name).write_bytes(pickle.dumps(entry))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


# ----------------------------------------------------------------------------- edits


def test_edit_replaces_one_anchored_line_keeping_its_indentation_and_saying_why():
    text = "for e in range(3):\n    if e in [215, 260]:\n        lr *= 0.1\n"
    out = apply_edits(text, [Edit("if e in [215, 260]:", "if e in REF.milestones:", "milestones")], source="s.py")
    assert out.splitlines() == ["for e in range(3):", "    # advkd reference run: milestones", "    if e in REF.milestones:", "        lr *= 0.1"]


def test_edit_with_several_lines_and_a_deletion():
    text = "a = 1\nif x == 200:\n    b = 2\nc = 3\n"
    out = apply_edits(text, [Edit("if x == 200:", "if x == 4:\n    b = 9\nelif x == 200:", "why"), Edit("c = 3", "", "gone")], source="s.py")
    assert "if x == 4:\n    b = 9\nelif x == 200:\n    b = 2" in out
    assert "c = 3" not in out and out.rstrip().endswith("pass")


@pytest.mark.parametrize("text, found", [("a = 1\n", "no line"), ("b = 2\nb = 2\n", r"2 lines \(1, 2\)")])
def test_an_anchor_must_match_exactly_one_line(text, found):
    with pytest.raises(EditError, match=found):
        apply_edits(text, [Edit("b = 2", "b = 3", "why")], source="ref.py")


def test_the_catalog_pins_every_reference_and_explains_every_edit():
    assert set(REFERENCES) == {"adaad", "rslad", "mtard", "bmtard"}
    for ref in REFERENCES.values():
        for commit in ref.repos().values():
            assert len(commit) == 40 and int(commit, 16) >= 0
        anchors = [e.anchor for e in ref.edits]
        assert len(anchors) == len(set(anchors)), ref.name
        assert all(e.why.strip() and e.anchor.strip() for e in ref.edits)
        joined = " ".join(e.replace for e in ref.edits)
        # the budget lines every reference needs: its student, optimiser, data subset and milestones
        for needed in ("REF.student()", "REF.optimizer(", "REF.train_subset(", "REF.milestones"):
            assert needed in joined, (ref.name, needed)


# ----------------------------------------------------------------------------- the checkout


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()


def test_the_pinned_commit_is_required_and_read_from_git_not_the_work_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("epochs = 300\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "pinned")
    pinned = _git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("epochs = 1  # a local change\n")
    assert run.locate_repo("o/n", pinned, {"o/n": repo}, tmp_path / "cache") == repo
    out = tmp_path / "src"
    run.extract(repo, pinned, out)
    assert (out / "train.py").read_text() == "epochs = 300\n"
    with pytest.raises(run.Refused, match="pinned commit " + "0" * 40):
        run.locate_repo("o/n", "0" * 40, {"o/n": repo}, tmp_path / "cache")
    with pytest.raises(run.Refused, match="no such folder"):
        run.locate_repo("o/n", pinned, {"o/n": tmp_path / "missing"}, tmp_path / "cache")


# ----------------------------------------------------------------------------- the host


def test_offline_cifar10_gives_advkd_s_images_in_advkd_s_order(tmp_path):
    root = write_cifar10(tmp_path)
    ours = load_split("cifar10", "train", root).head(10)
    ds = offline_cifar10(root)(root="./data", train=True, download=True)
    assert len(ds) == 30
    for i in range(10):
        img, label = ds[i]
        assert np.array_equal(np.asarray(img), ours.images[i].permute(1, 2, 0).numpy()) and label == int(ours.labels[i])
    with_index = offline_cifar10(root, with_index=True)(root="x", train=False)
    assert with_index[2][2] == 2 and len(with_index[2]) == 3


SCRIPT = '''
import torch, torchvision
from torchvision import transforms
import helper_mod
torch.manual_seed(0)
epochs = 300
trainset = torchvision.datasets.CIFAR10(root='./data', train=True, download=True, transform=transforms.ToTensor())
loader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True)
student = make_student()
student = student.cuda()
init = [p.detach().clone() for p in student.parameters()]
optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
steps = 0
for epoch in range(1, epochs + 1):
    for x, y in loader:
        x, y = x.cuda(), y.cuda()
        loss = helper_mod.loss(student(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    if epoch in [215, 260]:
        for g in optimizer.param_groups:
            g["lr"] *= 0.1
print("trained", steps)
'''

FAKE = Reference(
    name="pgd-at", repo="o/n", commit="0" * 40, script="train.py",
    edits=[Edit("torch.manual_seed(0)", "torch.manual_seed(REF.seed)", "seed"),
           Edit("epochs = 300", "epochs = REF.epochs", "epochs"),
           Edit("trainset = torchvision.datasets.CIFAR10(root='./data', train=True, download=True, transform=transforms.ToTensor())",
                "trainset = REF.train_subset(torchvision.datasets.CIFAR10(root='./data', train=True, download=True, transform=transforms.ToTensor()))", "subset"),
           Edit("student = make_student()", "student = REF.student()", "student"),
           Edit("optimizer = torch.optim.SGD(student.parameters(), lr=0.1)", "optimizer = REF.optimizer(student.parameters())", "optimiser"),
           Edit("if epoch in [215, 260]:", "if epoch in REF.milestones:", "milestones")],
)


def test_an_edited_script_trains_advkd_s_student_on_the_cpu_and_leaves_no_trace(tmp_path):
    data = write_cifar10(tmp_path / "data")
    cfg = resolve_config(TrainConfig(kind="distill"), preset=None, set_items=["milestones=[1]"],
                         flags={"method": "pgd-at", "arch": "tinycnn", "dataset": "cifar10", "epochs": 2, "batch_size": 4,
                                "train_subset": 10, "seed": 3, "optimizer": "adamw", "lr": 0.01})
    setup = prepare(cfg, runs_dir=tmp_path / "runs", data_dir=data, device=torch.device("cpu"), fast=FastPaths())
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    (src / "helper_mod.py").write_text("import torch.nn.functional as F\ndef loss(out, y):\n    return F.cross_entropy(out, y)\n")
    host = Host(setup)
    cwd = os.getcwd()
    ns = run.run_script(FAKE, host, src, tmp_path / "log.txt", False, data)
    assert os.getcwd() == cwd and "helper_mod" not in sys.modules
    assert ns["steps"] == 2 * 3  # 2 epochs x ceil(10 / 4) batches: the subset and the epochs took
    assert isinstance(ns["optimizer"], torch.optim.AdamW) and ns["optimizer"].param_groups[0]["lr"] == pytest.approx(0.001)  # one decay after epoch 1
    assert ns["student"] is host.built[0] and type(ns["student"]).__name__ == "TinyCNN"
    assert any(not torch.equal(a, b) for a, b in zip(ns["init"], ns["student"].parameters()))
    assert (tmp_path / "log.txt").read_text().strip() == "trained 6"
    assert "# advkd reference run: milestones" in (src / "train.py").read_text()
    assert torch.Tensor.cuda is not None and torch.zeros(1).device.type == "cpu"
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(1).cuda()  # the shim is gone: no CUDA on this machine


# ----------------------------------------------------------------------------- the table


def _record(tmp_path: Path, run_name: str, seed: int, attack: str, acc: float) -> dict:
    side = "reference" if run_name.endswith("-reference") else "distill"
    ckpt = tmp_path / side / "cifar10" / run_name / "last.safetensors"
    return {"checkpoint": str(ckpt), "preset": "mini", "n_examples": 1000, "attack": attack, "accuracy": acc, "seed": seed}


def test_compare_pairs_the_two_sides_of_a_run_and_tests_them(tmp_path):
    recs = []
    for seed, (r, a) in enumerate([(30.0, 31.0), (32.0, 30.5), (31.0, 31.5)]):
        recs += [_record(tmp_path, f"resnet18-rslad-wrn34-10-mini-s{seed}-reference", seed, "pgd10", r),
                 _record(tmp_path, f"resnet18-rslad-wrn34-10-mini-s{seed}", seed, "pgd10", a)]
    for seed, (r, a) in enumerate([(40.0, 20.0), (41.0, 21.0), (40.5, 20.5)]):
        recs += [_record(tmp_path, f"resnet18-mtard-x-mini-s{seed}-reference", seed, "clean", r),
                 _record(tmp_path, f"resnet18-mtard-x-mini-s{seed}", seed, "clean", a)]
    recs.append({**_record(tmp_path, "resnet18-rslad-wrn34-10-mini-s0", 0, "pgd10", 99.0), "checkpoint": "x/best.safetensors"})  # not a final student
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rows = compare.collect(tmp_path, "mini", 1000)
    assert rows["resnet18-rslad-wrn34-10-mini"]["advkd"] == {0: {"pgd10": 31.0}, 1: {"pgd10": 30.5}, 2: {"pgd10": 31.5}}
    table = compare.render(rows)
    rslad = next(line for line in table.splitlines() if "rslad" in line and "pgd10" in line)
    assert "31.0 ± 1.0" in rslad and "31.0 ± 0.5" in rslad and "no difference beyond seed noise" in rslad
    mtard = next(line for line in table.splitlines() if "mtard" in line and "clean" in line)
    assert "-20.0" in mtard and "differ (p < 0.05)" in mtard
