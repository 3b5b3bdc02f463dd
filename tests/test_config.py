"""eps parsing, --set parsing and type checks, presets."""
from __future__ import annotations

import pytest

from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError
from advkd.training.config import TrainConfig, list_presets, load_preset, parse_set, resolve_config


def test_eps_is_exact_and_keeps_its_text():
    e = parse_eps("8/255")
    assert e.text == "8/255" and e.value == 8 / 255
    assert parse_eps("0.031").value == 0.031
    assert parse_eps(0).value == 0.0


@pytest.mark.parametrize("bad", ["2", "-1/255", "abc", "1/0", "nan"])
def test_eps_outside_unit_interval_or_garbage_is_rejected(bad):
    with pytest.raises(AdvkdError):
        parse_eps(bad)


def test_set_parses_yaml_values_and_splits_method_keys():
    train, method = parse_set(["lr=0.05", "milestones=[2, 3]", "nesterov=true", "method.beta=6", "method.eps=16/255", "eval_attack="])
    assert train == {"lr": 0.05, "milestones": [2, 3], "nesterov": True, "eval_attack": ""}
    assert method == {"beta": 6, "eps": "16/255"}


def test_set_rejects_malformed_unknown_and_mistyped():
    with pytest.raises(AdvkdError, match="not key=value"):
        parse_set(["lr"])
    with pytest.raises(AdvkdError, match="unknown key 'learning_rate'"):
        resolve_config(TrainConfig(), preset=None, set_items=["learning_rate=0.1"], flags={})
    with pytest.raises(AdvkdError, match="epochs must be an integer"):
        resolve_config(TrainConfig(), preset=None, set_items=["epochs=1.5"], flags={})
    with pytest.raises(AdvkdError, match="schedule must be one of"):
        resolve_config(TrainConfig(), preset=None, set_items=["schedule=step"], flags={})
    with pytest.raises(AdvkdError, match="epochs must be >= 1"):
        resolve_config(TrainConfig(), preset=None, set_items=["epochs=0"], flags={})


def test_every_shipped_preset_loads_and_resolves_for_its_methods():
    assert {"adaad-paper", "bmtard-paper", "official", "mini"} <= set(list_presets())
    for name in list_presets():
        p = load_preset(name)
        assert p.description, name
        cfg = resolve_config(TrainConfig(), preset=name, set_items=None, flags={})
        assert cfg.scale == p.scale
        for method in p.methods:
            resolve_config(TrainConfig(method=method), preset=name, set_items=None, flags={"method": method})


def test_bad_preset_yaml_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    with pytest.raises(AdvkdError, match="not valid YAML"):
        load_preset(str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trian: {}\n")
    with pytest.raises(AdvkdError, match="unknown top-level key"):
        load_preset(str(unknown))
    with pytest.raises(AdvkdError, match="unknown preset"):
        load_preset("nope")


@pytest.mark.parametrize("preset", list_presets())
def test_preset_method_params_are_valid_for_every_method_and_dataset(preset):
    """Every method x dataset (x mobilenetv2) resolves and its preset params type-check."""
    from advkd.methods import METHODS, list_methods, params_for

    for method in list_methods():
        for dataset in ("cifar10", "cifar100", "tinyimagenet"):
            for arch in ("resnet18", "mobilenetv2"):
                cfg = resolve_config(TrainConfig(method=method), preset=preset, set_items=None, flags={"method": method, "dataset": dataset, "arch": arch})
                params_for(method, cfg.method_params)
                if preset in ("bmtard-paper", "mini") and METHODS.get(method).roles:
                    assert set(METHODS.get(method).roles) <= set(cfg.preset_teachers), (preset, method)


def test_bmtard_preset_rules_by_dataset_and_student():
    def resolve(**flags):
        return resolve_config(TrainConfig(), preset="bmtard-paper", set_items=None, flags=flags)

    tiny = resolve(method="bmtard", dataset="tinyimagenet", arch="preactresnet18")
    assert (tiny.batch_size, tiny.epochs, tiny.milestones) == (32, 100, [75, 90])
    assert tiny.preset_teachers["clean_teacher"] == "preactresnet34"
    assert resolve(method="bmtard", dataset="cifar10", arch="mobilenetv2").method_params["tau_adv_init"] == 2.0
    assert "tau_adv_init" not in resolve(method="bmtard", dataset="cifar10", arch="resnet18").method_params
    assert resolve(method="ard", dataset="cifar100", arch="resnet18").method_params["temperature"] == 5.0
    assert resolve(method="score", dataset="tinyimagenet", arch="resnet18").lr == 0.01
    # an explicit --set beats a rule
    cfg = resolve_config(TrainConfig(), preset="bmtard-paper", set_items=["method.tau_adv_init=5"], flags={"method": "bmtard", "arch": "mobilenetv2"})
    assert cfg.method_params["tau_adv_init"] == 5
