"""The Python API speaks Python: errors name arguments (the CLI keeps its flags), ``advkd.results``
is ``advkd results`` as a DataFrame, a model handed over in train mode is flagged, warned about and
put back, optional packages name their extra, and RobustBench imports without an ``autoattack``
left behind."""
from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from test_report import rec
from torch import nn

import advkd
from advkd.cli import main
from advkd.core.errors import AdvkdError, cli_spelling, spell
from advkd.evaluation.records import append_records, results_path
from advkd.evaluation.sanity import TrainModeWarning
from advkd.report.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def _bn_net() -> nn.Module:
    """A net whose output depends on its mode (BatchNorm), in train mode as nn.Module starts."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


# ----------------------------------------------------------------------------- errors name what the user typed


def test_spell_is_the_flag_only_inside_the_cli_block():
    assert spell("--teacher", "teacher=") == "teacher="
    with pytest.raises(RuntimeError), cli_spelling():
        assert spell("--teacher", "teacher=") == "--teacher"
        raise RuntimeError  # the block is left by an exception: Python spelling is back
    assert spell("--teacher", "teacher=") == "teacher="


def test_build_method_errors_name_the_teachers_keys_not_flags():
    with pytest.raises(AdvkdError) as e:
        advkd.build_method("rslad")
    assert str(e.value) == "method rslad needs teachers={'teacher': ...}"
    with pytest.raises(AdvkdError) as e:
        advkd.build_method("bmtard", {"teacher": _bn_net()})
    assert str(e.value) == "method bmtard needs teachers={'clean_teacher': ..., 'robust_teacher': ...}"
    with pytest.raises(AdvkdError) as e:
        advkd.build_method("rslad", {"teacher": _bn_net(), "robust_teacher": _bn_net()})
    assert str(e.value) == "method rslad does not take teachers={'robust_teacher': ...}; it takes teachers={'teacher': ...}"
    with pytest.raises(AdvkdError) as e:
        advkd.build_method("trades", betta=1.0)
    assert "--set" not in str(e.value) and "unknown key 'betta' in method trades parameters" in str(e.value)
    assert advkd.build_method("rslad", {"teacher": _bn_net()}).teachers.keys() == {"teacher"}


def test_distill_errors_name_its_own_keywords_before_any_work(tmp_path):
    common = {"student": "tinycnn", "dataset": "synthetic", "runs_dir": tmp_path / "runs", "data_dir": tmp_path / "data"}
    with pytest.raises(AdvkdError) as e:
        advkd.distill("rslad", **common)
    assert str(e.value) == "method rslad needs teacher=..."
    with pytest.raises(AdvkdError) as e:
        advkd.distill("mtard", teacher="tinycnn", **common)
    assert str(e.value) == "method mtard needs clean_teacher=... and robust_teacher=..."
    with pytest.raises(AdvkdError) as e:
        advkd.distill("trades", teacher="tinycnn", **common)
    assert str(e.value) == "method trades does not take teacher=...; it takes no teacher"
    assert not (tmp_path / "runs").exists()


def test_the_cli_still_names_the_flags_and_python_spelling_comes_back_after(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    base = ["distill", "--student", "tinycnn", "--dataset", "synthetic", "--runs-dir", str(tmp_path / "runs")]
    assert main([*base, "--method", "rslad"]) == 2
    assert capsys.readouterr().err.strip() == "advkd: error: method rslad needs --teacher"
    assert main([*base, "--method", "bmtard", "--teacher", "tinycnn"]) == 2
    assert capsys.readouterr().err.strip() == "advkd: error: method bmtard needs --clean-teacher and --robust-teacher"
    assert main(["attack", "x.safetensors", "--suite", "quick", "--attacks", "fgsm"]) == 2
    assert "give either --suite or --attacks, not both" in capsys.readouterr().err
    with pytest.raises(AdvkdError, match=r"teachers=\{'teacher'"):
        advkd.build_method("rslad")


def test_evaluate_model_errors_name_its_arguments():
    x, y = _data(8)
    with pytest.raises(AdvkdError, match=r"^give either suite= or attacks=, not both$"):
        advkd.evaluate_model(_bn_net().eval(), (x, y), suite="quick", attacks=["fgsm"])
    with pytest.raises(AdvkdError, match=r"^attack_examples 'pgd10=0' is not ATTACK=N with N >= 1; e\.g\. attack_examples=\{'aa': 100\}$"):
        advkd.evaluate_model(_bn_net().eval(), (x, y), attacks=["pgd10"], attack_examples={"pgd10": 0})


# ----------------------------------------------------------------------------- advkd.results


def _store(runs: Path) -> None:
    runs.mkdir(parents=True)
    a = {"checkpoint": "runs/distill/cifar10/a-s0/best.safetensors", "sha256": "sha-a", "run": "a-s0", "method": "rslad"}
    b = {"checkpoint": "runs/distill/cifar10/b-s0/best.safetensors", "sha256": "sha-b", "run": "b-s0", "method": "ard", "scale": "small"}
    append_records(results_path(runs), [
        rec(**a, attack="pgd10", kind="white-box", accuracy=10.0, time="2026-01-01T00:00:00+0000"),
        rec(**a, attack="pgd10", kind="white-box", accuracy=12.0, time="2026-02-01T00:00:00+0000"),  # newer: wins
        rec(**a, attack="clean", accuracy=40.0),
        rec(**b, attack="pgd10", kind="white-box", accuracy=20.0, teachers={"teacher": {"arch": "resnet14", "paper_arch": "wrn34-10"}}),
    ])


def test_results_is_the_cli_table_as_a_dataframe(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    runs = tmp_path / "runs"
    _store(runs)
    assert main(["results", "--format", "json", "--runs-dir", str(runs)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert advkd.results(runs, as_frame=False) == printed  # the same rows, in the same order
    df = advkd.results(runs)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(COLUMNS) and len(df) == 3
    newest = df[(df["run"] == "a-s0") & (df["attack"] == "pgd10")]
    assert newest["accuracy"].tolist() == [12.0]
    assert df.loc[df["run"] == "b-s0", "teachers"].tolist() == ["teacher=wrn34-10"]
    only = advkd.results(runs, attack="pgd*", scale="small")
    assert only[["run", "accuracy"]].values.tolist() == [["b-s0", 20.0]]
    assert advkd.results(runs, method="*rslad*")["run"].unique().tolist() == ["a-s0"]
    empty = advkd.results(tmp_path / "no-runs-yet")
    assert empty.empty and list(empty.columns) == list(COLUMNS)


def test_results_reads_the_runs_dir_of_the_environment(tmp_path, monkeypatch):
    runs = tmp_path / "elsewhere"
    _store(runs)
    monkeypatch.setenv("ADVKD_RUNS_DIR", str(runs))
    assert len(advkd.results(as_frame=False)) == 3


def test_results_without_pandas_names_the_extra_or_gives_dicts(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _store(runs)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'advkd\[pandas\]', or pass as_frame=False"):
        advkd.results(runs)
    rows = advkd.results(runs, as_frame=False)
    assert isinstance(rows, list) and {(r["run"], r["attack"]) for r in rows} == {("a-s0", "pgd10"), ("a-s0", "clean"), ("b-s0", "pgd10")}


# ----------------------------------------------------------------------------- model-in-train-mode


def test_evaluate_model_flags_warns_and_restores_a_model_in_train_mode():
    net, (x, y) = _bn_net(), _data()
    stats = net[2].running_mean.clone()
    with pytest.warns(TrainModeWarning, match="model-in-train-mode") as caught:
        records = advkd.evaluate_model(net, (x, y), attacks=["fgsm"])
    assert {Path(w.filename) for w in caught if w.category is TrainModeWarning} == {Path(__file__)}  # points at the caller
    assert net.training and all(m.training for m in net.modules())  # put back
    assert torch.equal(net[2].running_mean, stats)  # evaluated in eval mode: BatchNorm statistics untouched
    assert [r["attack"] for r in records] == ["clean", "fgsm"]
    for r in records:
        assert any(f.startswith("model-in-train-mode:") for f in r["sanity_flags"]), r["sanity_flags"]
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainModeWarning)
        again = advkd.evaluate_model(net, (x, y), attacks=["fgsm"])
    assert not net.training and [r["accuracy"] for r in again] == [r["accuracy"] for r in records]  # same numbers in either mode
    assert not any(f.startswith("model-in-train-mode") for r in again for f in r["sanity_flags"])


def test_attack_and_evaluate_warn_and_restore_too():
    net, (x, y) = _bn_net(), _data()
    stats = net[2].running_mean.clone()
    with pytest.warns(TrainModeWarning):
        x_adv = advkd.attack(net, x, y, "pgd10", eps="8/255")
    assert net.training and torch.equal(net[2].running_mean, stats) and x_adv.shape == x.shape
    with pytest.warns(TrainModeWarning):
        out = advkd.evaluate(net, advkd.TensorData(x, y), ["clean"])
    assert out["clean"].extra.get("model_was_training") is True and net.training


def test_as_model_keeps_the_mode_of_the_module_it_wraps():
    net, (x, y) = _bn_net(), _data(8)
    assert advkd.as_model(net, "cifar10").training
    wrapped = advkd.as_model(net.eval(), "cifar10")
    assert not wrapped.training and not any(m.training for m in wrapped.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainModeWarning)
        advkd.attack(wrapped, x, y, "fgsm")


def test_the_training_loops_own_evaluation_does_not_warn(tmp_path):
    from test_train import CPU, QUIET, tiny_cfg

    from advkd.training.loop import evaluate_epoch, prepare

    setup = prepare(tiny_cfg(method="natural", method_params={}, eval_examples=16), runs_dir=tmp_path, data_dir=tmp_path, device=CPU)
    setup.model.train()  # as train_epoch leaves it
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainModeWarning)
        metrics = evaluate_epoch(setup, QUIET)
    assert setup.model.training and 0 <= metrics["clean_acc"] <= 100


# ----------------------------------------------------------------------------- extras


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_extra_an_error_names_exists_and_installs_its_package():
    from advkd.training.sinks import SINK_NAMES

    extras = _extras()
    for name in (*SINK_NAMES, "pandas", "robustbench"):
        assert any(req.split(">")[0].split("=")[0].split("<")[0].strip() == name for req in extras[name]), (name, extras.get(name))


@pytest.mark.parametrize("sink,module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_sink_package_names_its_extra(sink, module, monkeypatch):
    from advkd.training.sinks import check_sink_names

    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if the package were not installed
    with pytest.raises(AdvkdError) as e:
        check_sink_names([sink])
    assert str(e.value).startswith(f"log_to=[{sink!r}] needs the optional {sink} package: pip install 'advkd[{sink}]'")
    with cli_spelling():
        with pytest.raises(AdvkdError) as e:
            check_sink_names([sink])
    assert str(e.value).startswith(f"--log {sink} needs the optional {sink} package: pip install 'advkd[{sink}]'")
    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(SummaryWriter=object))  # installed: accepted
    assert check_sink_names([sink]) == [sink]


# ----------------------------------------------------------------------------- RobustBench


def test_robustbench_sees_pyautoattack_only_while_it_imports(monkeypatch):
    import pyautoattack

    from advkd.evaluation.sources import _robustbench_sees_pyautoattack

    monkeypatch.delitem(sys.modules, "autoattack", raising=False)
    monkeypatch.delitem(sys.modules, "autoattack.state", raising=False)
    with _robustbench_sees_pyautoattack():
        import autoattack
        from autoattack.state import EvaluationState

        assert autoattack is pyautoattack and EvaluationState is pyautoattack.state.EvaluationState
    assert "autoattack" not in sys.modules and "autoattack.state" not in sys.modules  # nothing left behind
    real = types.ModuleType("autoattack")  # an installed AutoAttack (the GitHub package) is never shadowed
    monkeypatch.setitem(sys.modules, "autoattack", real)
    with _robustbench_sees_pyautoattack():
        assert sys.modules["autoattack"] is real
    assert sys.modules["autoattack"] is real


def test_robustbench_load_model_through_advkd_needs_no_autoattack_package():
    import importlib.util

    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("the robustbench extra is not installed")
    from advkd.evaluation.sources import _robustbench_loader

    load_model = _robustbench_loader("robustbench:Standard")
    assert load_model.__module__ == "robustbench.utils" and callable(load_model)
    assert "autoattack" not in sys.modules or sys.modules["autoattack"].__name__ == "autoattack"  # no stand-in left
