"""Files are validated on load, not trusted once they parse (#24 class 4).

Checkpoints (``advkd.models.checkpoint.load_checkpoint``, plus the dataset's class count in
``advkd.evaluation.sources.load_checkpoint_for``): finite tensors, BatchNorm variances >= 0, a
head as wide as the dataset has classes, the tensor hash written at save time. Resume states
(``advkd.training.resume.load_resume``): they belong to the run dir they are in. Every command
that loads such a file refuses it with exit code 2, one stderr line, no traceback, nothing
changed on disk and no record appended -- the contract of tests/test_bad_inputs.py, whose
snapshot helper this file reuses.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_bad_inputs import refused_line, tree

from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.core.runs import RESUME
from advkd.evaluation.sources import load_checkpoint_for
from advkd.models import build_model
from advkd.models.checkpoint import DIGEST_KEY, load_checkpoint, read_tensors, save_tensors, tensor_digest
from advkd.training.resume import resumable_state

pytestmark = pytest.mark.usefixtures("one_thread")

SYN = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "32", "--n-examples", "16", "--batch-size", "16", "--set", "method.steps=1"]
PT = ["pretrain-teacher", "--arch", "tinycnn", "--method", "pgd-at", *SYN]
DI = ["distill", "--method", "rslad", "--student", "tinycnn", *SYN]
RUN = Path("pretrain-teacher", "synthetic", "good")
RECORD = '{"attack": "clean", "accuracy": 50.0, "checkpoint": "earlier.safetensors"}\n'  # results.jsonl as a case finds it


def craft(src: Path, dst: Path, tensors=None, meta=None, *, rehash: bool = True) -> None:
    """Copy checkpoint ``src`` to ``dst`` with ``tensors(t)`` / ``meta(m)`` applied in place;
    ``rehash`` False keeps the old tensor hash (a file damaged after it was written)."""
    t, m = read_tensors(src)
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    if rehash:
        save_tensors(dst, t, m)
    else:
        save_file(t, str(dst), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in m.items()})


def flip_low_bit(path: Path, key: str) -> None:
    """Flip the least significant mantissa bit of the first float of tensor ``key`` in the file
    itself (the value stays finite: only the recorded hash can tell)."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    start = 8 + n + header[key]["data_offsets"][0]
    data[start] ^= 0x01
    path.write_bytes(bytes(data))


def strip_new_keys(path: Path, *keys: str) -> None:
    """Rewrite ``path`` as an older advkd wrote it: the same tensors, metadata without ``keys``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in keys}
    save_file(load_file(str(path)), str(path), metadata=meta)


def set_first(key: str, value: float):
    def edit(t):
        t[key].view(-1)[0] = value
    return edit


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A trained tiny checkpoint, crafted bad ones, and run dirs holding another run's resume state."""
    root = tmp_path_factory.mktemp("world")
    for runs, extra in (("trained", ["--name", "good"]), ("trained", ["--name", "other"]), ("elsewhere", ["--name", "good", "--lr", "0.0123"])):
        assert main([*PT, "--runs-dir", str(root / runs), *extra]) == 0
    good = root / "trained" / RUN / "best.safetensors"
    shutil.copy(good, root / "good.safetensors")
    craft(good, root / "nan.safetensors", set_first("linear.weight", float("nan")))
    craft(good, root / "inf.safetensors", set_first("conv1.weight", float("inf")))
    craft(good, root / "negvar.safetensors", set_first("bn1.running_var", -1.0))
    craft(good, root / "head-vs-cifar100.safetensors", meta=lambda m: m.update(dataset="cifar100", num_classes=100))
    craft(good, root / "cifar100-10.safetensors", meta=lambda m: m.update(dataset="cifar100"))
    craft(good, root / "unknown-dataset.safetensors", meta=lambda m: m.update(dataset="imagenet-22k"))
    shutil.copy(good, root / "flipped.safetensors")
    flip_low_bit(root / "flipped.safetensors", "linear.weight")
    craft(good, root / "old-nan.safetensors", set_first("linear.weight", float("nan")))
    strip_new_keys(root / "old-nan.safetensors", DIGEST_KEY)
    state = load_file(str(good))
    torch.save({**state, "linear.weight": torch.full_like(state["linear.weight"], float("nan"))}, root / "nan.pt")
    torch.save(build_model("tinycnn", num_classes=100).state_dict(), root / "head100.pt")
    # run dirs of "good" holding a resume state that is not its own
    for name, donor in (("run-other-run", root / "trained" / "pretrain-teacher" / "synthetic" / "other"),
                        ("run-other-config", root / "elsewhere" / RUN)):
        shutil.copytree(root / "trained", root / name, ignore=shutil.ignore_patterns("other"))
        shutil.copy(donor / RESUME, root / name / RUN / RESUME)
    shutil.copytree(root / "trained", root / "run-flipped-state", ignore=shutil.ignore_patterns("other"))
    flip_low_bit(root / "run-flipped-state" / RUN / RESUME, "model.linear.weight")
    # a distill run from teacher.safetensors (a path relative to the working dir), and another file of that name
    (root / "distilled").mkdir()
    shutil.copy(good, root / "distilled" / "teacher.safetensors")
    shutil.copy(root / "trained" / "pretrain-teacher" / "synthetic" / "other" / "best.safetensors", root / "replaced-teacher.safetensors")
    here = os.getcwd()
    try:
        os.chdir(root / "distilled")
        assert main([*DI, "--teacher", "teacher.safetensors", "--runs-dir", "runs", "--name", "d"]) == 0
    finally:
        os.chdir(here)
    return root


# (id, argv with {w} = the world copy, {c} = the case folder; world items copied in as "src>dst")
CASES: list[tuple[str, list[str], list[str]]] = [
    # ------------------------------------------------------------------ attack
    ("at-nan", ["attack", "{w}/nan.safetensors", "--attacks", "clean"], []),
    ("at-inf", ["attack", "{w}/inf.safetensors", "--attacks", "clean"], []),
    ("at-negvar", ["attack", "{w}/negvar.safetensors", "--attacks", "clean"], []),
    ("at-head-vs-cifar100", ["attack", "{w}/head-vs-cifar100.safetensors", "--attacks", "clean"], []),
    ("at-cifar100-head10", ["attack", "{w}/cifar100-10.safetensors", "--attacks", "clean"], []),
    ("at-unknown-dataset", ["attack", "{w}/unknown-dataset.safetensors", "--attacks", "clean"], []),
    ("at-flipped", ["attack", "{w}/flipped.safetensors", "--attacks", "clean"], []),
    ("at-old-nan", ["attack", "{w}/old-nan.safetensors", "--attacks", "clean"], []),
    ("at-foreign-nan", ["attack", "tinycnn:{w}/nan.pt", "--dataset", "synthetic", "--attacks", "clean"], []),
    ("at-foreign-head", ["attack", "tinycnn:{w}/head100.pt", "--dataset", "synthetic", "--attacks", "clean"], []),
    # ------------------------------------------------------------------ transfer-attack
    ("tr-surrogate-nan", ["transfer-attack", "--surrogate", "{w}/nan.safetensors", "--target", "{w}/good.safetensors"], []),
    ("tr-surrogate-flipped", ["transfer-attack", "--surrogate", "{w}/flipped.safetensors", "--target", "{w}/good.safetensors"], []),
    ("tr-target-negvar", ["transfer-attack", "--surrogate", "{w}/good.safetensors", "--target", "{w}/negvar.safetensors"], []),
    # ------------------------------------------------------------------ landscape
    ("la-nan", ["landscape", "{w}/nan.safetensors", "--out", "{c}/l.png"], []),
    ("la-flipped", ["landscape", "{w}/flipped.safetensors", "--out", "{c}/l.png"], []),
    # ------------------------------------------------------------------ distill
    ("di-teacher-nan", [*DI, "--teacher", "{w}/nan.safetensors"], []),
    ("di-teacher-inf", [*DI, "--teacher", "{w}/inf.safetensors"], []),
    ("di-teacher-negvar", [*DI, "--teacher", "{w}/negvar.safetensors"], []),
    ("di-teacher-flipped", [*DI, "--teacher", "{w}/flipped.safetensors"], []),
    ("di-teacher-foreign-nan", [*DI, "--teacher", "tinycnn:{w}/nan.pt"], []),
    # ------------------------------------------------------------------ resume
    ("pt-resume-other-run", [*PT, "--name", "good", "--resume", "--epochs", "2"], ["run-other-run>runs"]),
    ("pt-resume-other-config", [*PT, "--name", "good", "--resume", "--epochs", "2"], ["run-other-config>runs"]),
    ("pt-resume-flipped-state", [*PT, "--name", "good", "--resume", "--epochs", "2"], ["run-flipped-state>runs"]),
    ("pt-rerun-other-run", [*PT, "--name", "good", "--epochs", "2"], ["run-other-run>runs"]),  # without --resume: still no silent reuse
    # the teacher file changed under a distill run: its recorded sha256 (config resolved_teachers) no longer matches
    ("di-resume-teacher-replaced", [*DI, "--teacher", "teacher.safetensors", "--name", "d", "--resume", "--epochs", "2"],
     ["distilled/runs>runs", "replaced-teacher.safetensors>teacher.safetensors"]),
]


@pytest.mark.parametrize("case,argv,files", CASES, ids=[c[0] for c in CASES])
def test_bad_file_is_refused(case, argv, files, world, tmp_path, monkeypatch, capsys):
    case_dir = tmp_path / "case"
    runs, data = case_dir / "runs", case_dir / "data"
    for item in files:
        src, _, dst = item.partition(">")
        if (world / src).is_dir():
            shutil.copytree(world / src, case_dir / dst, dirs_exist_ok=True)
        else:
            case_dir.mkdir(exist_ok=True)
            shutil.copy(world / src, case_dir / dst)
    runs.mkdir(parents=True, exist_ok=True)
    data.mkdir()
    (runs / "results.jsonl").write_text(RECORD)
    monkeypatch.chdir(case_dir)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(data))
    args = [a.replace("{w}", str(world)).replace("{c}", str(case_dir)) for a in argv]
    before, world_before = tree(tmp_path), tree(world)
    capsys.readouterr()
    refused_line(case, args, capsys)
    assert tree(tmp_path) == before, f"{case}: the command created or changed files"
    assert tree(world) == world_before
    assert (runs / "results.jsonl").read_text() == RECORD, f"{case}: a record was appended"


@pytest.mark.parametrize("name,message", [
    ("nan.safetensors", r"non-finite values: linear.weight holds nan"),
    ("inf.safetensors", r"non-finite values: conv1.weight holds inf"),
    ("negvar.safetensors", r"BatchNorm variance bn1.running_var is negative \(-1\)"),
    ("head-vs-cifar100.safetensors", r"classifier head linear has 10 outputs but its metadata says num_classes=100 \(dataset cifar100\)"),
    ("cifar100-10.safetensors", r"its head has 10 outputs but cifar100 has 100 classes"),
    ("unknown-dataset.safetensors", r"names dataset 'imagenet-22k', which advkd does not know"),
    ("flipped.safetensors", r"is corrupt: its tensors do not match the sha256 recorded when it was saved"),
    ("old-nan.safetensors", r"non-finite values: linear.weight holds nan"),
])
def test_each_checkpoint_problem_is_named_with_the_file(world, name, message):
    with pytest.raises(AdvkdError, match=message) as err:
        load_checkpoint_for(world / name)
    assert str(world / name) in str(err.value) and "\n" not in str(err.value)


def test_foreign_weights_are_checked_too(world):
    from advkd.evaluation.sources import load_source

    with pytest.raises(AdvkdError, match=r"weights .*nan.pt has non-finite values: linear.weight holds nan"):
        load_source(f"tinycnn:{world / 'nan.pt'}", dataset="synthetic")
    with pytest.raises(AdvkdError, match=r"classifier head linear has 100 outputs but synthetic has 10 classes"):
        load_source(f"tinycnn:{world / 'head100.pt'}", dataset="synthetic")


def test_resume_state_of_another_run_is_named(world):
    for name, message in (("run-other-run", r"belongs to another run \(pretrain-teacher/synthetic/other\), not to pretrain-teacher/synthetic/good"),
                          ("run-other-config", r"belongs to another run: it was written with lr=0.0123, but this run's config.yaml says lr="),
                          ("run-flipped-state", r"resume state .* is corrupt: its tensors do not match")):
        with pytest.raises(AdvkdError, match=message + r".*use name=\.\.\. for a new run, or delete"):
            resumable_state(world / name / RUN)


def test_a_good_checkpoint_still_loads_and_carries_its_tensor_hash(world, tmp_path, monkeypatch):
    good = world / "good.safetensors"
    model, meta = load_checkpoint(good, sha256=sha256_file(good))
    assert meta[DIGEST_KEY] == tensor_digest(load_file(str(good)))
    assert not model.training
    runs = tmp_path / "runs"
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path))
    assert main(["attack", str(good), "--attacks", "clean", "--n-examples", "8", "--runs-dir", str(runs)]) == 0
    assert len((runs / "results.jsonl").read_text().splitlines()) == 1


def test_a_recorded_file_hash_is_checked(world):
    """A student's record of its teacher's sha256 (load_checkpoint(sha256=...)): another file is refused."""
    with pytest.raises(AdvkdError, match=r"is not the file that was recorded: its sha256 is [0-9a-f]{12}\.\.\., the record says 000000000000"):
        load_checkpoint(world / "good.safetensors", sha256="0" * 64)


def test_a_teacher_is_checked_against_the_sha256_its_student_recorded(tmp_path):
    """measure-knowledge loads a bmtard student's teachers from its metadata: a teacher file
    replaced since the student was trained is refused, not measured."""
    from advkd.core.progress import Reporter
    from advkd.report.measure_knowledge import knowledge_scale_records
    from advkd.training.config import TrainConfig
    from advkd.training.loop import run

    def cfg(**kw):
        return TrainConfig(**{**dict(arch="tinycnn", dataset="synthetic", epochs=1, batch_size=32, train_subset=32, eval_examples=16, seed=1), **kw})

    quiet, cpu = Reporter(enabled=False), torch.device("cpu")
    clean = run(cfg(kind="pretrain-teacher", method="natural", name="clean"), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    robust = run(cfg(kind="pretrain-teacher", method="natural", name="robust", seed=2), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    teachers = {"clean_teacher": str(clean.path / "best.safetensors"), "robust_teacher": str(robust.path / "best.safetensors")}
    done = run(cfg(kind="distill", method="bmtard", teachers=teachers, method_params={"steps": 1}), runs_dir=tmp_path, data_dir=tmp_path, device=cpu, reporter=quiet)
    assert len(knowledge_scale_records(done.path, data_dir=tmp_path, n_examples=8)) == 4
    shutil.copy(robust.path / "best.safetensors", clean.path / "best.safetensors")  # a valid checkpoint, but not the recorded one
    with pytest.raises(AdvkdError, match=r"clean/best.safetensors is not the file that was recorded"):
        knowledge_scale_records(done.path, data_dir=tmp_path, n_examples=8)


def test_old_checkpoints_without_the_hash_still_load(world, tmp_path):
    old = tmp_path / "old.safetensors"
    shutil.copy(world / "good.safetensors", old)
    strip_new_keys(old, DIGEST_KEY)
    model, meta = load_checkpoint_for(old)
    assert DIGEST_KEY not in meta
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), load_checkpoint(world / "good.safetensors")[0](x))
    flip_low_bit(old, "linear.weight")  # without a recorded hash a flipped low bit cannot be told
    load_checkpoint(old)


def test_old_resume_states_without_identity_still_resume(world, tmp_path):
    shutil.copytree(world / "trained", tmp_path / "runs")
    path = tmp_path / "runs" / RUN
    strip_new_keys(path / RESUME, "run", "config", DIGEST_KEY)
    assert resumable_state(path).epoch == 1
    assert main([*PT, "--runs-dir", str(tmp_path / "runs"), "--name", "good", "--resume", "--epochs", "2"]) == 0
    assert resumable_state(path).epoch == 2


def test_the_tensor_hash_covers_every_dtype_and_shape():
    base = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(3, dtype=torch.int64),
            "c": torch.ones(4, dtype=torch.bfloat16), "d": torch.tensor([True, False]), "e": torch.empty(0)}
    digest = tensor_digest(base)
    assert digest == tensor_digest(dict(reversed(base.items())))  # order-free
    assert digest != tensor_digest({**base, "a": base["a"].reshape(3, 2)})
    assert digest != tensor_digest({**base, "c": base["c"].to(torch.float16)})
    assert digest != tensor_digest({**base, "d": torch.tensor([True, True])})
    assert digest != tensor_digest({("z" if k == "e" else k): v for k, v in base.items()})
