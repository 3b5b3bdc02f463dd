"""eps parsing, --set parsing and type checks, presets."""
from __future__ import annotations

import pytest

from advkd.config import TrainConfig, list_presets, load_preset, parse_set, resolve_config
from advkd.epsilon import parse_eps
from advkd.errors import AdvkdError


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
