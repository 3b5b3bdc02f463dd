"""Presets at the top level (presets/, installed as the package advkd.presets), ``advkd presets
list|show``, and ``--print-config`` on the training commands (issue 26 item 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import refused_line, tree

from advkd.cli import main
from advkd.training.config import PRESET_DIR, list_presets, load_preset
from advkd.training.preset_catalog import headline

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32", "--set", "method.steps=2"]
USER_PRESET = """\
description: >-
  My tiny preset: synthetic data,
  tinycnn everywhere. Second sentence.
scale: custom
train: {epochs: 1, train_subset: 64, eval_examples: 32, batch_size: 32, milestones: []}
methods:
  rslad: {params: {steps: 2}}
  trades: {params: {steps: 2}}
rules:
  - when: {dataset: synthetic}
    teachers: {teacher: tinycnn}
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ADVKD_PRESET_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


def printed(capsys, *args: str) -> tuple[str, dict[str, str]]:
    """Run ``args --print-config``: (the YAML without its comment lines, comment key -> text)."""
    assert main([*args, "--print-config"]) == 0
    out = capsys.readouterr().out
    comments = [line[2:] for line in out.splitlines() if line.startswith("# ")]
    notes = dict(c.split(": ", 1) for c in comments if ": " in c)
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#")), notes


# ----------------------------------------------------------------------------- one copy, installed as package data


def test_the_presets_live_once_at_the_top_level_and_load_by_name(monkeypatch):
    monkeypatch.delenv("ADVKD_PRESET_DIR", raising=False)
    assert not (ROOT / "advkd" / "presets").exists()  # one copy, not two
    assert PRESET_DIR.resolve() == (ROOT / "presets").resolve()  # the editable install maps advkd.presets to presets/
    files = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
    assert len(files) >= 7 and files == list_presets()
    for name in files:
        assert load_preset(name).path.resolve() == (ROOT / "presets" / f"{name}.yaml").resolve()


def test_pyproject_ships_presets_as_advkd_presets_and_declares_every_package():
    tomllib = pytest.importorskip("tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"advkd.presets": "presets"}
    assert "*.yaml" in tool["package-data"]["advkd.presets"]
    declared = set(tool["packages"])
    folders = {".".join(p.relative_to(ROOT).parts) for p in [ROOT / "advkd", *(ROOT / "advkd").rglob("*")]
               if p.is_dir() and "__pycache__" not in p.parts}
    assert declared == folders | {"advkd.presets"}, "pyproject.toml [tool.setuptools] packages must list every folder under advkd/"
    assert (ROOT / "presets" / "__init__.py").is_file()  # what makes advkd.presets importable in an editable install
    assert not any(p.startswith("presets") for p in declared)  # no stray top-level package


# ----------------------------------------------------------------------------- presets list / show


def test_presets_list_names_every_shipped_preset_with_scale_headline_and_path(env, capsys):
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_presets():
        preset = load_preset(name)
        row = next(line for line in out.splitlines() if f" {name} " in line)
        assert preset.scale in row and "shipped" in row and str(preset.path) in row
        assert headline(preset.description) in row
    assert main(["presets", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_presets()
    assert all(r["origin"] == "shipped" and not r["hides_shipped"] and Path(r["path"]).parent == PRESET_DIR for r in rows)


def test_headline_is_the_first_sentence_up_to_its_colon():
    assert headline("B-MTARD teachers: the clean teacher (a: b) by natural training. More.") == "B-MTARD teachers"
    assert headline("The pipeline (2 cores; `make demo`): small nets. Next") == "The pipeline (2 cores; `make demo`)"
    assert headline("Line one\n  wraps here. Second sentence: not this.") == "Line one wraps here"


def test_a_user_preset_is_listed_and_one_named_like_a_shipped_preset_is_marked(env, capsys, monkeypatch):
    user = env / "mine"
    user.mkdir()
    (user / "tiny.yaml").write_text(USER_PRESET)
    (user / "mini.yaml").write_text(USER_PRESET)
    (user / "broken.yaml").write_text("scale: [unclosed\n")
    monkeypatch.setenv("ADVKD_PRESET_DIR", str(user))
    assert main(["presets", "list", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny"] == {"name": "tiny", "path": str(user / "tiny.yaml"), "origin": "$ADVKD_PRESET_DIR", "scale": "custom",
                            "summary": "My tiny preset", "hides_shipped": False}
    assert rows["mini"]["origin"] == "$ADVKD_PRESET_DIR" and rows["mini"]["hides_shipped"] and rows["mini"]["path"] == str(user / "mini.yaml")
    assert rows["small"]["origin"] == "shipped"
    assert rows["broken"]["scale"] == "" and rows["broken"]["summary"].startswith("does not load:") and "not valid YAML" in rows["broken"]["summary"]
    assert main(["presets", "list"]) == 0
    mini_row = next(line for line in capsys.readouterr().out.splitlines() if " mini " in line)
    assert "hides the shipped mini" in mini_row
    assert main(["presets", "show", "mini"]) == 0
    first, rest = capsys.readouterr().out.split("\n", 1)
    assert first == f"# $ADVKD_PRESET_DIR preset mini, in place of the shipped one: {user / 'mini.yaml'}" and rest == USER_PRESET


def test_presets_show_prints_where_then_the_file_verbatim_and_the_output_is_a_preset(env, capsys):
    assert main(["presets", "show", "small"]) == 0
    out = capsys.readouterr().out
    first, rest = out.split("\n", 1)
    assert first == f"# shipped preset small: {PRESET_DIR / 'small.yaml'}"
    assert rest == (PRESET_DIR / "small.yaml").read_text()
    copy = env / "copy.yaml"
    copy.write_text(out)
    mine, shipped = load_preset(str(copy)), load_preset("small")
    assert (mine.scale, mine.train, mine.methods, mine.rules, mine.arch_map) == (shipped.scale, shipped.train, shipped.methods, shipped.rules, shipped.arch_map)


def test_presets_show_of_an_unknown_name_is_one_line_naming_the_known_ones(env, capsys):
    line = refused_line("show-unknown", ["presets", "show", "tiniest"], capsys)
    assert "unknown preset 'tiniest'" in line and all(name in line for name in list_presets())


# ----------------------------------------------------------------------------- --print-config


def test_print_config_is_what_the_run_saves_and_writes_nothing(env, capsys):
    """pretrain-teacher, then distill with the preset's default teacher: each printed config is
    config.yaml's text exactly and the printed run dir is the run's; --print-config leaves the
    runs dir and the data dir as they were."""
    preset = env / "tiny.yaml"
    preset.write_text(USER_PRESET)
    pretrain = ["pretrain-teacher", "--arch", "tinycnn", "--method", "trades", "--dataset", "synthetic", "--preset", str(preset)]
    text, notes = printed(capsys, *pretrain)
    assert not (env / "runs").exists() and not (env / "data").exists()
    cfg = yaml.safe_load(text)
    assert cfg["kind"] == "pretrain-teacher" and cfg["preset_file"] == str(preset) and cfg["epochs"] == 1 and cfg["method_params"] == {"steps": 2}
    assert main(pretrain) == 0
    capsys.readouterr()
    run = Path(notes["run dir"])
    assert run.parent == env / "runs" / "pretrain-teacher" / "synthetic"
    assert (run / "config.yaml").read_text() == text

    distill = ["distill", "--method", "rslad", "--student", "tinycnn", "--dataset", "synthetic", "--preset", str(preset)]
    before = tree(env)
    text, notes = printed(capsys, *distill)
    assert tree(env) == before and "missing teacher" not in notes
    cfg = yaml.safe_load(text)
    assert cfg["teachers"] == {"teacher": "tinycnn"} and cfg["resolved_teachers"]["teacher"]["source"] == str(run / "best.safetensors")
    assert main(distill) == 0
    capsys.readouterr()
    assert (Path(notes["run dir"]) / "config.yaml").read_text() == text


def test_print_config_names_a_missing_teacher_and_the_command_that_makes_it(env, capsys):
    args = ["distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "tinycnn", *FAST]
    text, notes = printed(capsys, *args)
    assert not (env / "runs").exists()
    cfg = yaml.safe_load(text)
    assert cfg["teachers"] == {"teacher": "tinycnn"} and cfg["resolved_teachers"] == {}
    assert Path(notes["run dir"]).name == cfg["name"] == "tinycnn-rslad-tinycnn-steps2-b32-ev32-n64-s0"
    error = refused_line("missing-teacher", args, capsys)  # the real run's own error: the same words
    assert notes["missing teacher"] == error.removeprefix("advkd: error: ")
    assert "create it with: advkd pretrain-teacher --arch tinycnn --method trades --dataset synthetic" in notes["missing teacher"]


def test_print_config_does_not_download_a_robustbench_teacher(env, capsys):
    text, notes = printed(capsys, "distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "robustbench:Chen2021LTD_WRD34_20", *FAST)
    assert "not downloaded yet" in notes["missing teacher"] and "Chen2021LTD_WRN34_20.pt" in notes["missing teacher"]
    assert yaml.safe_load(text)["teachers"] == {"teacher": "robustbench:Chen2021LTD_WRD34_20"}
    assert not (env / "data").exists() and not (env / "runs").exists()


@pytest.mark.parametrize("case, extra, expected", [
    ("bad-method-param", ["--teacher", "tinycnn", "--set", "method.bogus=1"], "unknown key 'bogus'"),
    ("bad-eval-attack", ["--teacher", "tinycnn", "--set", "eval_attack=pgd999"], "eval_attack"),
    ("no-teacher", [], "needs --teacher"),
    ("teacher-file-missing", ["--teacher", "nowhere/best.safetensors"], "nowhere/best.safetensors"),
])
def test_print_config_refuses_what_the_run_refuses(env, capsys, case, extra, expected):
    line = refused_line(case, ["distill", "--method", "rslad", "--student", "tinycnn", *FAST, *extra, "--print-config"], capsys)
    assert expected in line
    assert not (env / "runs").exists()


def test_print_config_says_when_the_run_dir_exists(env, capsys):
    run = env / "runs" / "pretrain-teacher" / "synthetic" / "tinycnn-trades-steps2-b32-ev32-n64-s0"
    run.mkdir(parents=True)
    before = tree(env)
    _, notes = printed(capsys, "pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST)
    assert notes["run dir"].startswith(f"{run} (exists") and tree(env) == before
