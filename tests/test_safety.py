"""Safety guards of issue #12: run names cannot leave the runs dir, CIFAR files cannot run code,
``--set`` takes every number notation a user types (and refuses values no optimiser can use), and
run files are as readable as the umask says (a shared results dir can be read by the group)."""
from __future__ import annotations

import os
import pickle
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from advkd.cli import main
from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_text
from advkd.core.runs import KINDS, MAX_NAME_BYTES, check_name, default_name, run_dir, safe_name
from advkd.core.settings import coerce
from advkd.data.loaders import load_split
from advkd.methods import params_for
from advkd.models.checkpoint import save_tensors
from advkd.training.config import TrainConfig, parse_set, resolve_config

FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "32", "--n-examples", "16", "--batch-size", "32"]
REAL_DATA = Path("/work/shared/data")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A runs dir two levels down, so names that climb out (``../x``) would land in tmp_path."""
    runs = tmp_path / "a" / "b" / "runs"
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("advkd: error: ") and "Traceback" not in err[0]
    return err[0]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------------------- 1. run names


BAD_NAMES = ["../../../escape", "/abs/path", ".", "..", "", "   ", "a/b", "a\\b", "x\x00y", "new\nline", "x" * 300,
             "é" * (MAX_NAME_BYTES // 2 + 1)]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses_unsafe_names(name):
    with pytest.raises(AdvkdError) as e:
        check_name(name)
    assert "\n" not in str(e.value) and "run name" in str(e.value)


@pytest.mark.parametrize("name", ["my-run", "rn18_trades.v2", "s0", "..x", "x..", ".hidden", "run with spaces", "naïve",
                                  "x" * MAX_NAME_BYTES])
def test_check_name_keeps_safe_names_as_given(name):
    assert check_name(name) == name


@pytest.mark.parametrize("kind,dataset,name", [
    ("distill", "synthetic", "../../x"), ("distill", "../..", "x"), ("../../x", "synthetic", "x"), ("distill", "/tmp", "x"),
    ("distill", "synthetic", "/tmp/x"), ("distill", "", "x"), ("teacher", "synthetic", "x"),
])
def test_run_dir_never_leaves_runs_dir(tmp_path, kind, dataset, name):
    with pytest.raises(AdvkdError):
        run_dir(tmp_path / "runs", kind, dataset, name)


def test_run_dir_of_good_parts_is_inside(tmp_path):
    for kind in KINDS:
        path = run_dir(tmp_path / "runs", kind, "cifar10", "rn18-s0")
        assert path == tmp_path / "runs" / kind / "cifar10" / "rn18-s0"
        assert path.resolve().is_relative_to((tmp_path / "runs").resolve())
    assert run_dir("runs", "distill", "cifar10", "x") == Path("runs/distill/cifar10/x")  # relative runs dir


def test_default_names_are_always_safe():
    class Cfg:
        paper_arch, arch, method, preset, seed = "resnet18", "resnet18", "rslad", "../../evil/preset", 0
        variant = "eps8_255-" + "k" * 400

    name = default_name(Cfg, {"teacher": "wrn34-10"})
    assert check_name(name) == name and len(name.encode()) <= MAX_NAME_BYTES
    assert name == default_name(Cfg, {"teacher": "wrn34-10"})  # deterministic: --resume finds it again
    assert safe_name("a" * 500) != safe_name("a" * 499)  # cut names stay distinct
    assert safe_name("rn18-rslad-s0") == "rn18-rslad-s0"  # short names unchanged


@pytest.mark.parametrize("item,needle", [
    ("name=../../x", "run name '../../x'"), ("name=/abs/path", "path separator"), ("name=.", "run name '.'"),
    ("kind=../../x", "kind must be one of"), ("kind=teacher", "kind must be one of"),
])
def test_validate_refuses_bad_name_and_kind(item, needle):
    with pytest.raises(AdvkdError, match=re.escape(needle)):
        resolve_config(TrainConfig(), preset=None, set_items=[item], flags={})


@pytest.mark.parametrize("args", [
    ["--name", "../../../escape"], ["--name", "ABS"], ["--name", "."], ["--name", ".."], ["--name", "x" * 300],
    ["--set", "name=../../x"], ["--set", "kind=../../x"], ["--name", "a/b"], ["--set", "name=ABS"],
])
def test_cli_refuses_unsafe_names_and_writes_nothing(env, capsys, args):
    outside = env / "outside" / "abs"  # an absolute name, kept inside tmp_path so the old code cannot litter /
    args = [a.replace("ABS", str(outside)) for a in args]
    before = tree(env)
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, *args]) == 2
    line = one_error_line(capsys)
    assert "run name" in line or "kind" in line, line
    assert tree(env) == before, "nothing may be created, inside or outside the runs dir"
    assert not outside.exists()


def test_cli_good_name_lands_inside_runs_dir(env, capsys):
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, "--name", "..ok"]) == 0
    runs = env / "a" / "b" / "runs"
    assert (runs / "pretrain-teacher" / "synthetic" / "..ok" / "best.safetensors").is_file()
    assert {p.name for p in env.iterdir()} == {"a"}


# ----------------------------------------------------------------------------- 2. CIFAR files load data, never code


def _cifar_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    return d


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpensFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.open, (str(self.marker), "w"))


class _Evals:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload,ref", [(_RunsShell, "system"), (_OpensFile, "open"), (_Evals, "exec")])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_crafted_cifar_pickle_runs_no_code(tmp_path, payload, ref, protocol):
    d = _cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    rows = np.zeros((1, 3072), np.uint8)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": rows, b"labels": [0], b"x": payload(marker)}, f, protocol=protocol)
    with pytest.raises(AdvkdError) as e:
        load_split("cifar10", "test", tmp_path)
    msg = str(e.value)
    assert not marker.exists(), "the crafted pickle ran code"
    assert "is not a CIFAR batch file: it references" in msg and ref in msg and "refusing to load it" in msg
    assert "\n" not in msg


def test_object_arrays_and_odd_codecs_are_refused(tmp_path):
    d = _cifar_dir(tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": np.array([0], dtype=object)}, f, protocol=2)
    with pytest.raises(AdvkdError, match="object dtype"):
        load_split("cifar10", "test", tmp_path)
    import codecs

    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Rot13()}, f, protocol=2)
    with pytest.raises(AdvkdError, match="not a CIFAR batch file"):
        load_split("cifar10", "test", tmp_path)


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"\x80\x02}q\x00(X\x04\x00\x00\x00data", pickle.dumps([1, 2, 3])])
def test_truncated_random_or_wrong_files_are_one_line_errors(tmp_path, content):
    d = _cifar_dir(tmp_path)
    (d / "test_batch").write_bytes(content)
    with pytest.raises(AdvkdError, match="corrupt or unreadable|not a CIFAR batch file") as e:
        load_split("cifar10", "test", tmp_path)
    assert "\n" not in str(e.value) and "test_batch" in str(e.value)


def test_truncated_genuine_style_batch(tmp_path):
    d = _cifar_dir(tmp_path)
    whole = pickle.dumps({b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251, b"labels": [1, 2]}, protocol=2)
    for cut in (10, len(whole) // 2, len(whole) - 1):
        (d / "test_batch").write_bytes(whole[:cut])
        with pytest.raises(AdvkdError, match="corrupt or unreadable") as e:
            load_split("cifar10", "test", tmp_path)
        assert "\n" not in str(e.value)
    (d / "test_batch").write_bytes(whole)
    assert load_split("cifar10", "test", tmp_path).labels.tolist() == [1, 2]


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_python3_written_batches_still_load(tmp_path, protocol):
    d = tmp_path / "c100" / "cifar-100-python"
    d.mkdir(parents=True)
    rows = (np.arange(3 * 3072) % 256).astype(np.uint8).reshape(3, 3072)
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({"data": rows, "fine_labels": [99, 0, 5], "coarse_labels": [1, 2, 3], "filenames": ["a", "b", "c"],
                         "batch_label": "training batch 1 of 1"}, f, protocol=protocol)
    data = load_split("cifar100", "train", tmp_path / "c100")
    assert data.labels.tolist() == [99, 0, 5]
    assert torch.equal(data.images.reshape(3, -1), torch.from_numpy(rows))


@pytest.mark.skipif(not (REAL_DATA / "cifar-10-batches-py" / "data_batch_1").is_file(), reason="offline CIFAR-10 not available")
def test_real_cifar10_loads_exactly_as_plain_pickle():
    train = load_split("cifar10", "train", REAL_DATA)
    with open(REAL_DATA / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        plain = pickle.load(f, encoding="bytes")
    n = len(plain[b"labels"])
    assert train.images.shape == (50000, 3, 32, 32)
    assert torch.equal(train.images[:n].reshape(n, -1), torch.from_numpy(plain[b"data"]))
    assert train.labels[:n].tolist() == plain[b"labels"]
    test = load_split("cifar10", "test", REAL_DATA)
    assert test.images.shape == (10000, 3, 32, 32)


# ----------------------------------------------------------------------------- 3. numbers in --set


@pytest.mark.parametrize("text,value", [
    ("2e-4", 2e-4), ("1E9", 1e9), ("1e9", 1e9), (".5", 0.5), ("5.", 5.0), ("-1e-3", -1e-3), ("+3", 3.0), ("1.5e+2", 150.0),
    ("0.05", 0.05), ("1", 1.0), ("-.5", -0.5),
])
def test_float_fields_take_every_notation(text, value):
    train, _ = parse_set([f"k={text}"])
    got = coerce(train["k"], float, "k")
    assert got == pytest.approx(value) and type(got) is float


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e999"])
def test_infinity_is_never_a_setting(text):
    train, _ = parse_set([f"k={text}"])
    with pytest.raises(AdvkdError, match="k must be a finite number"):
        coerce(train["k"], float, "k")


@pytest.mark.parametrize("text", ["2e-4", "1E9", ".5", "5.", "+3", "1e-2"])
def test_train_settings_take_every_notation(text):
    cfg = resolve_config(TrainConfig(), preset=None, set_items=[f"weight_decay={text}", f"lr={text}", f"lr_gamma={text}"], flags={})
    assert cfg.weight_decay == cfg.lr == cfg.lr_gamma == pytest.approx(float(text)) and isinstance(cfg.lr, float)


def test_method_floats_get_the_same_parsing():
    _, method = parse_set(["method.beta=1e-1", "method.eps=8/255", "method.tau_max=1e30", "method.step_size=2/255"])
    p = params_for("trades", {"beta": method["beta"]})
    assert p.beta == pytest.approx(0.1)
    p = params_for("adaad", {"eps": method["eps"], "step_size": method["step_size"]})
    assert p.eps == "8/255" and p.step_size == "2/255"  # eps fractions keep their text
    assert params_for("mtard", {"tau_max": method["tau_max"]}).tau_max == 1e30  # "no upper bound" is a large finite one
    with pytest.raises(AdvkdError, match="tau_max must be a finite number"):
        params_for("mtard", {"tau_max": "inf"})
    with pytest.raises(AdvkdError, match="beta must be a number"):
        params_for("trades", {"beta": "nan"})
    with pytest.raises(AdvkdError, match="beta must be a number"):
        params_for("trades", {"beta": float("nan")})


def test_eps_fields_keep_fractions():
    cfg = resolve_config(TrainConfig(), preset=None, set_items=["eval_eps=8/255", "name=007"], flags={})
    assert cfg.eval_eps == "8/255" and cfg.name == "007"


@pytest.mark.parametrize("item,needle", [
    ("lr=inf", "lr must be a finite number"), ("lr=-inf", "lr must be a finite number"), ("lr=.nan", "lr must be a number"),
    ("lr=nan", "lr must be a number"), ("lr=0", "lr must be > 0"), ("lr=-1e-3", "lr must be > 0"),
    ("momentum=-5", "momentum must be >= 0"), ("momentum=inf", "momentum must be a finite"),
    ("weight_decay=-2e-4", "weight_decay must be >= 0"), ("weight_decay=1e400", "weight_decay must be a finite"),
    ("lr_gamma=-1", "lr_gamma must be > 0"), ("lr_gamma=0", "lr_gamma must be > 0"), ("lr_gamma=inf", "lr_gamma must be a finite"),
    ("epochs=1e3", "epochs must be an integer written with digits only"), ("epochs=2.0", "epochs must be an integer"),
    ("epochs=ten", "epochs must be an integer"), ("lr=fast", "lr must be a number"), ("lr=true", "lr must be a number"),
    ("momentum=0", "nesterov=true needs momentum > 0"),
])
def test_bad_numbers_are_refused(item, needle):
    items = [item, "nesterov=true"] if "nesterov" in needle else [item]
    with pytest.raises(AdvkdError, match=re.escape(needle)) as e:
        resolve_config(TrainConfig(), preset=None, set_items=items, flags={})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_validate_refuses_non_finite_lr(value):
    with pytest.raises(AdvkdError, match="lr must be"):
        TrainConfig(lr=value).validate()


def test_int_fields_stay_decimal():
    train, _ = parse_set(["epochs=010", "milestones=[2, 3]"])
    assert train["epochs"] == 10 and train["milestones"] == [2, 3]  # YAML 1.1 alone would read 010 as octal 8


def test_cli_readme_example_weight_decay_runs(env, capsys):
    args = ["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, "--set", "weight_decay=2e-4",
            "--set", "lr=1E-2", "--name", "wd"]
    assert main(args) == 0
    import yaml

    cfg = yaml.safe_load((env / "a" / "b" / "runs" / "pretrain-teacher" / "synthetic" / "wd" / "config.yaml").read_text())
    assert cfg["weight_decay"] == pytest.approx(2e-4) and cfg["lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("args,needle", [
    (["--set", "momentum=-5"], "momentum must be >= 0"), (["--set", "lr_gamma=-1"], "lr_gamma must be > 0"),
    (["--lr", "nan"], "lr must be"), (["--lr", "inf"], "lr must be a finite number"), (["--set", "lr=1e400"], "finite"),
])
def test_cli_refuses_bad_numbers(env, capsys, args, needle):
    before = tree(env)
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, *args]) == 2
    assert needle in one_error_line(capsys)
    assert tree(env) == before


# ----------------------------------------------------------------------------- 4. file modes follow the umask


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    text = tmp_path / "config.yaml"
    atomic_write_text(text, "a: 1\n")
    ckpt = tmp_path / "last.safetensors"
    save_tensors(ckpt, {"w": torch.zeros(2)}, {"arch": "tinycnn"})
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    for p in (text, ckpt, plain):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p
    atomic_write_text(text, "a: 2\n")  # overwriting keeps the mode and leaves no temp file
    assert stat.S_IMODE(text.stat().st_mode) == mode and text.read_text() == "a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "last.safetensors", "plain.txt"]


def test_cli_run_files_are_group_readable(env, capsys, umask):
    umask(0o002)
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "natural", *FAST, "--name", "shared"]) == 0
    run = env / "a" / "b" / "runs" / "pretrain-teacher" / "synthetic" / "shared"
    files = [p for p in run.iterdir() if p.is_file()]
    assert files and {p.name for p in files} >= {"config.yaml", "best.safetensors", "last.safetensors"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o040, f"{p.name} is not group-readable"
