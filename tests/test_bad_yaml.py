"""Hostile and malformed YAML (issue #24): every YAML advkd reads goes through
:func:`advkd.core.safe_yaml.load_yaml` (no anchors or aliases, at most 64 levels deep, at most
1 MiB), and every preset section is checked against its schema.

The command battery follows tests/test_bad_inputs.py: in-process ``advkd.cli.main``, exit code
2, exactly one stderr line, no traceback, nothing created or changed on disk. The bombs here
are a few hundred bytes that would be gigabytes if expanded; the loader refuses them at the
first anchor, so nothing is ever expanded.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_bad_inputs import PT, refused_line, tree

from advkd.cli import main
from advkd.core.errors import AdvkdError, cli_spelling
from advkd.core.safe_yaml import MAX_BYTES, MAX_DEPTH, UnsafeYaml, load_yaml
from advkd.training.config import PRESET_DIR, SCALES, TrainConfig, list_presets, load_preset, parse_set, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")


def bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: ``width ** levels`` strings (9 ** 9 = 387 million) from ~400 bytes."""
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * width)}]" for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


DEEP = "[" * 100_000 + "]" * 100_000

# name -> preset file content (str, or bytes written as they are)
PRESETS: dict[str, str | bytes] = {
    "bomb": "scale: mini\n" + bomb(),
    "deep": "scale: mini\ntrain: " + DEEP + "\n",
    "deep-block": "scale: mini\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)),
    "oversize": "scale: mini\n" + "# padding\n" * (MAX_BYTES // 10 + 1),
    "anchor": "scale: mini\ntrain: &t {epochs: 1}\n",
    "merge-key": "scale: mini\nbase: &b {epochs: 1}\ntrain: {<<: *b}\n",
    "latin1": "scale: mini\ndescription: caf\xe9 au lait\n".encode("latin-1"),
    "control-char": "scale: mini\ndescription: a\x01b\n",
    "huge-int": "scale: mini\ntrain: {epochs: " + "9" * 5000 + "}\n",
    "bad-date": "scale: mini\ndescription: 2024-13-45\n",
    "unknown-method": "scale: mini\nmethods:\n  nope: {train: {epochs: 1}}\n",
    "method-list": "scale: mini\nmethods:\n  pgd-at: [1, 2]\n",
    "method-key": "scale: mini\nmethods:\n  pgd-at: {trian: {epochs: 1}}\n",
    "method-params-type": "scale: mini\nmethods:\n  pgd-at: {params: {steps: many}}\n",
    "method-params-unknown": "scale: mini\nmethods:\n  pgd-at: {params: {stepz: 3}}\n",
    "method-twice": "scale: mini\nmethods:\n  pgd-at: {}\n  PGD_AT: {}\n",
    "scale-missing": "train: {epochs: 1}\n",
    "scale-unknown": "scale: huge\n",
    "scale-mapping": "scale: {a: 1}\n",
    "train-type": "scale: mini\ntrain: {epochs: ten}\n",
    "train-list": "scale: mini\ntrain: [1, 2]\n",
    "train-unknown": "scale: mini\ntrain: {epochz: 1}\n",
    "train-derived": "scale: mini\ntrain: {scale: paper}\n",
    "train-name": "scale: mini\ntrain: {name: shared}\n",
    "rules-mapping": "scale: mini\nrules: {when: {dataset: cifar10}}\n",
    "rule-when-method": "scale: mini\nrules:\n  - when: {method: nope}\n    train: {epochs: 1}\n",
    "rule-params-type": "scale: mini\nrules:\n  - when: {method: pgd-at}\n    params: {steps: [1]}\n",
    "rule-teacher-role": "scale: mini\nrules:\n  - when: {dataset: synthetic}\n    teachers: {teacher2: resnet56}\n",
    "arch-map": "scale: mini\narch_map: {resnet18: nosuchnet}\n",
    "deviations": "scale: mini\ndeviations: {a: 1}\n",
    "evaluation-key": "scale: mini\nevaluation: {n_exampels: 10}\n",
    "evaluation-type": "scale: mini\nevaluation: {attack_examples: {aa: lots}}\n",
    "description-type": "scale: mini\ndescription: [1, 2]\n",
    "int-key": "scale: mini\nmethods: {1: {}}\n",
}

# how each refusal names the key or the problem (the battery checks this text is in the line)
EXPECT = {
    "bomb": "anchor or alias (line 2)", "deep": f"deeper than {MAX_DEPTH}", "deep-block": f"deeper than {MAX_DEPTH}",
    "oversize": "at most", "anchor": "anchor or alias (line 2)", "merge-key": "anchor or alias", "latin1": "not UTF-8",
    "control-char": "control character", "huge-int": "cannot read", "bad-date": "cannot read",
    "unknown-method": "methods.nope: unknown method 'nope'", "method-list": "methods.pgd-at: expected a mapping, got a list",
    "method-key": "methods.pgd-at.trian: unknown key", "method-params-type": "methods.pgd-at.params.steps must be an integer",
    "method-params-unknown": "methods.pgd-at.params.stepz: unknown parameter", "method-twice": "two entries",
    "scale-missing": "scale: missing", "scale-unknown": "scale: expected one of", "scale-mapping": "scale: expected one of",
    "train-type": "train.epochs must be an integer", "train-list": "train: expected a mapping, got a list",
    "train-unknown": "train.epochz: unknown training setting", "train-derived": "train.scale: not a preset setting",
    "train-name": "train.name: not a preset setting", "rules-mapping": "rules: expected a list",
    "rule-when-method": "rules[1].when.method: unknown method", "rule-params-type": "rules[1].params.steps must be an integer",
    "rule-teacher-role": "rules[1].teachers.teacher2: unknown key", "arch-map": "arch_map.resnet18: unknown architecture 'nosuchnet'",
    "deviations": "deviations: expected a list", "evaluation-key": "evaluation.n_exampels: unknown key",
    "evaluation-type": "evaluation.attack_examples.aa: expected a whole number", "description-type": "description: expected text",
    "int-key": "methods: keys must be text",
}

# run dirs for --resume: name -> how config.yaml is rewritten
RESUME = {
    "resume-epochs-ten": lambda text: text.replace("\nepochs: 1\n", "\nepochs: ten\n"),
    "resume-bomb": lambda text: text + bomb(),
    "resume-deep": lambda text: text + "lol: " + DEEP + "\n",
    "resume-list": lambda text: "- 1\n- 2\n",
    "resume-teachers-type": lambda text: text.replace("\nteachers: {}\n", "\nteachers: [a]\n"),
    "resume-latin1": None,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Preset files, and one real tiny run whose config.yaml each --resume case replaces."""
    root = tmp_path_factory.mktemp("yamlworld")
    for name, content in PRESETS.items():
        path = root / f"{name}.yaml"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    runs = root / "trained"
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    config = runs / "pretrain-teacher" / "synthetic" / "good" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    assert "\nepochs: 1\n" in text and "\nteachers: {}\n" in text
    for name, rewrite in RESUME.items():
        shutil.copytree(runs, root / name)
        target = root / name / "pretrain-teacher" / "synthetic" / "good" / "config.yaml"
        if rewrite is None:
            target.write_bytes(text.encode() + "description: caf\xe9\n".encode("latin-1"))
        else:
            target.write_text(rewrite(text), encoding="utf-8")
    return root


BOMB_SET = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]]"

# (id, argv with {w} = the world, files copied into the case folder as src>dst, expected text in the line)
CASES: list[tuple[str, list[str], list[str], str]] = [
    *[(f"preset-{name}", [*PT, "--preset", f"{{w}}/{name}.yaml"], [], EXPECT[name]) for name in PRESETS],
    ("distill-preset-method-list", ["distill", "--method", "rslad", "--student", "tinycnn", "--teacher", "tinycnn",
                                    "--dataset", "synthetic", "--preset", "{w}/method-list.yaml"], [], EXPECT["method-list"]),
    ("plan-preset-bomb", ["report", "table2", "--plan", "--preset", "{w}/bomb.yaml"], [], "anchor or alias"),
    ("set-alias-bomb", [*PT, "--set", f"milestones={BOMB_SET}"], [], "--set milestones uses a YAML anchor or alias"),
    ("set-method-alias", [*PT, "--set", "method.steps=*x"], [], "--set method.steps uses a YAML anchor or alias"),
    *[(name, [*PT, "--name", "good", "--resume"], [f"{name}>runs"], "config.yaml") for name in RESUME],
]
RESUME_EXPECT = {
    "resume-epochs-ten": "epochs must be an integer, got 'ten'", "resume-bomb": "anchor or alias", "resume-deep": f"deeper than {MAX_DEPTH}",
    "resume-list": "not a mapping", "resume-teachers-type": "teachers must be a mapping", "resume-latin1": "not UTF-8",
}


def test_the_battery_covers_the_issue():
    assert len(CASES) >= 12
    assert {"preset-bomb", "preset-deep", "preset-oversize", "preset-anchor", "preset-latin1", "preset-unknown-method", "preset-method-list",
            "preset-scale-missing", "preset-scale-unknown", "preset-scale-mapping", "preset-train-type", "resume-epochs-ten", "resume-bomb"} <= {c[0] for c in CASES}


@pytest.mark.parametrize("case,argv,files,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_yaml_is_one_line_and_touches_nothing(case, argv, files, expect, world, tmp_path, monkeypatch, capsys):
    deep = tmp_path / "a" / "b" / "c"
    runs, data = deep / "runs", deep / "data"
    runs.mkdir(parents=True)
    data.mkdir()
    for item in files:
        src, _, dst = item.partition(">")
        shutil.copytree(world / src, deep / dst, dirs_exist_ok=True)
    monkeypatch.chdir(deep)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(data))
    monkeypatch.delenv("ADVKD_PRESET_DIR", raising=False)
    args = [a.replace("{w}", str(world)) for a in argv]
    before, world_before = tree(tmp_path), tree(world)
    capsys.readouterr()
    started = time.monotonic()
    line = refused_line(case, args, capsys)
    assert RESUME_EXPECT.get(case, expect) in line, line
    assert "config.yaml" in line if case.startswith("resume-") else True
    if "preset" in case and case != "plan-preset-bomb":
        assert f"{world}/" in line, f"{case}: the line does not name the file: {line}"
    assert time.monotonic() - started < 30, f"{case}: took {time.monotonic() - started:.0f} s"
    assert tree(tmp_path) == before, f"{case}: the command created or changed files"
    assert tree(world) == world_before


# ----------------------------------------------------------------------------- load_yaml itself


def test_load_yaml_reads_a_normal_mapping(tmp_path):
    text = "train: {epochs: 3, milestones: [1, 2]}\nnote: 'a: b'\n"
    assert load_yaml(text, source="x") == {"train": {"epochs": 3, "milestones": [1, 2]}, "note": "a: b"}
    (tmp_path / "a.yaml").write_text(text)
    assert load_yaml(tmp_path / "a.yaml", source="x") == load_yaml(text.encode(), source="x")
    assert load_yaml("", source="x") is None


@pytest.mark.parametrize("text", [bomb(), "a: &x 1\n", "a: *x\n", "a: {<<: *x}\n", "- &x [1]\n- *x\n"])
def test_load_yaml_refuses_anchors_and_aliases_without_expanding(text):
    started = time.monotonic()
    with pytest.raises(UnsafeYaml, match=r"^src uses a YAML anchor or alias \(line \d+\)"):
        load_yaml(text, source="src")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("text", [DEEP, "{a: " * 100_000, "".join(" " * i + "a:\n" for i in range(100)), "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)])
def test_load_yaml_refuses_deep_nesting_before_python_recursion(text):
    with pytest.raises(UnsafeYaml, match=f"nests deeper than {MAX_DEPTH} levels"):
        load_yaml(text, source="src")


def test_load_yaml_takes_nesting_up_to_the_limit():
    value = load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, source="src")
    for _ in range(MAX_DEPTH - 1):
        (value,) = value
    assert value == []


def test_load_yaml_refuses_oversize_input_before_parsing(tmp_path):
    big = "a: [" + "1, " * (MAX_BYTES // 3) + "]\n"
    for given in (big, big.encode()):
        with pytest.raises(UnsafeYaml, match="at most 1048576 bytes"):
            load_yaml(given, source="src")
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(UnsafeYaml, match=r"big.yaml is \d+ bytes"):
        load_yaml(path, source=str(path))
    assert load_yaml("a: " + "x" * (MAX_BYTES - 10), source="src")["a"].startswith("xxx")  # just under the limit reads


@pytest.mark.parametrize("given,match", [
    (b"a: caf\xe9\n", "src is not a text file"),
    ("a: [1, 2\n", r"src is not valid YAML \(line 2\)"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("!!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
    ("a: \x07\n", "control character"),
    ("a: " + "1" * 5000 + "\n", "cannot read"),
])
def test_load_yaml_turns_every_parse_failure_into_one_line(given, match):
    with pytest.raises(AdvkdError, match=match) as e:
        load_yaml(given, source="src")
    assert "\n" not in str(e.value)


def test_set_values_refuse_aliases_but_keep_other_text():
    with pytest.raises(UnsafeYaml, match=r"settings\['milestones'\]"):
        parse_set([f"milestones={BOMB_SET}"])
    with pytest.raises(UnsafeYaml, match="--set milestones"), cli_spelling():
        parse_set([f"milestones={BOMB_SET}"])
    train, method = parse_set(["eval_attack=&x", "name=a&b", "lr=[1, 2", "method.eps=8/255"])
    assert train == {"eval_attack": "&x", "name": "a&b", "lr": "[1, 2"} and method == {"eps": "8/255"}


# ----------------------------------------------------------------------------- the preset schema


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_shipped_preset_passes_the_schema_also_as_a_user_file(name, tmp_path, monkeypatch):
    monkeypatch.delenv("ADVKD_PRESET_DIR", raising=False)
    assert name in list_presets()
    shipped = load_preset(name)
    assert shipped.scale in SCALES
    copy = tmp_path / f"{name}.yaml"
    shutil.copy(PRESET_DIR / f"{name}.yaml", copy)
    user = load_preset(str(copy))
    assert (user.scale, user.train, user.methods, user.rules, user.arch_map, user.evaluation) == (
        shipped.scale, shipped.train, shipped.methods, shipped.rules, shipped.arch_map, shipped.evaluation)


def test_the_schema_normalises_names_so_an_alias_is_not_ignored(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("scale: custom\nmethods:\n  PGD_AT: {train: {epochs: 7}}\nrules:\n  - when: {method: Pgd_At, dataset: SYNTHETIC}\n    train: {batch_size: 8}\n")
    cfg = resolve_config(TrainConfig(), preset=str(path), set_items=None, flags={"method": "pgd-at", "dataset": "synthetic", "kind": "pretrain-teacher"})
    assert (cfg.epochs, cfg.batch_size, cfg.scale) == (7, 8, "custom")


def test_a_shipped_preset_may_omit_scale_but_a_user_preset_may_not(tmp_path, monkeypatch):
    path = tmp_path / "noscale.yaml"
    path.write_text("train: {epochs: 2}\n")
    with pytest.raises(AdvkdError, match=r"noscale.yaml: scale: missing; .*paper, small, mini, custom"):
        load_preset(str(path))
    monkeypatch.setenv("ADVKD_PRESET_DIR", str(tmp_path))  # a user preset found by name is a user preset too
    with pytest.raises(AdvkdError, match="scale: missing"):
        load_preset("noscale")
