"""One settings schema: every numeric setting of the run config, of every built-in method and of
every built-in attack declares its range once (advkd.core.settings.setting), and every value that
enters -- --set, a preset, a method or attack parameter -- passes the same checks: finite, held by
float32 without changing meaning, inside its range. Generated batteries (hypothesis) draw
pathological values for every declared setting; a bounded number of examples runs in make test,
more in make test-slow (HYPOTHESIS_PROFILE=slow)."""
from __future__ import annotations

import dataclasses
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advkd.attacks import ATTACKS
from advkd.core.errors import AdvkdError
from advkd.core.settings import Range, apply_overrides, check_number, numeric_fields, range_of
from advkd.methods import METHODS, list_methods
from advkd.training.config import TrainConfig


def _params_classes() -> list[tuple[str, type]]:
    out = [("run config", TrainConfig)]
    out += [(f"method {name}", METHODS.get(name).Params) for name in list_methods()]
    out += [(f"attack {name}", ATTACKS.get(name).Params) for name in ATTACKS.builtin_names()]
    return out


CLASSES = _params_classes()
# (where, class, field) for every numeric setting advkd ships
NUMERIC = [(where, cls, f) for where, cls in CLASSES for f in numeric_fields(cls)]


def test_every_numeric_setting_declares_its_range():
    missing = [f"{where}: {f.name}" for where, cls, f in NUMERIC if range_of(f) is None]
    assert not missing, f"settings without a declared range (use advkd.core.settings.setting): {missing}"
    assert len(NUMERIC) > 60  # the run config, every method and every attack are really looked at


def test_every_default_satisfies_its_own_range():
    for where, _, f in NUMERIC:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for v in default if isinstance(default, (list, tuple)) else [default]:
            check_number(v, f"{where}.{f.name}", range_of(f))


def _as32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


PATHOLOGICAL = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -0.0, -1.0, 1e39, -1e39, 1e-46, 5e-324, 1.0 - 1e-12, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
    st.sampled_from(["inf", "nan", "-inf", "1e999", "0x10", "1_000", "", " ", "true", "None", "\udcff"]),
    st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(NUMERIC), value=PATHOLOGICAL)
def test_a_setting_takes_a_value_only_when_it_means_what_it_says(case, value):
    """Either a one-line AdvkdError, or a stored value that is finite, float32-faithful and in range."""
    where, cls, f = case
    obj = cls() if cls is not TrainConfig else TrainConfig()
    try:
        got = getattr(apply_overrides(obj, {f.name: value}, where=where), f.name)
    except AdvkdError as e:
        assert "\n" not in str(e) and str(e)
        return
    rng = range_of(f)
    for v in got if isinstance(got, list) else [got]:
        assert isinstance(v, (int, float)) and not isinstance(v, bool)
        if isinstance(v, float):
            assert math.isfinite(v) and math.isfinite(_as32(v)) and (v == 0 or _as32(v) != 0)
            assert rng.holds(_as32(v))
        assert rng.holds(v)


@given(value=PATHOLOGICAL, name=st.sampled_from(sorted(ATTACKS.builtin_names())))
def test_an_attack_parameter_is_checked_by_the_same_schema(value, name):
    cls = ATTACKS.get(name)
    fields = numeric_fields(cls.Params)
    if not fields:
        return
    f = fields[hash(str(value)) % len(fields)]
    try:
        atk = cls(**{f.name: value}) if cls.default_eps is None else cls("8/255", **{f.name: value})
    except AdvkdError as e:
        assert "\n" not in str(e)
        return
    v = getattr(atk.hparams, f.name)
    if isinstance(v, float):
        assert math.isfinite(v) and (v == 0 or _as32(v) != 0)
    assert range_of(f).holds(v)


def test_the_range_rules_by_hand():
    r = Range(ge=0, lt=1)
    assert check_number(0.5, "b", r) == 0.5
    for bad in (1.0, -0.1, 1.0 - 1e-12, math.inf):  # 1 - 1e-12 is 1.0 in float32: outside [0, 1)
        with pytest.raises(AdvkdError):
            check_number(bad, "b", r)
    with pytest.raises(AdvkdError, match="finite"):
        check_number(math.inf, "x")  # no range: finite is still the rule
    with pytest.raises(AdvkdError, match="float32"):
        check_number(1e-46, "x")


@pytest.mark.parametrize("item", [
    "method.beta=inf", "method.init_std=inf", "method.temperature=0", "method.alpha=1.5", "method.steps=-1", "method.tau_rate=-1e-3",
    "method.kl_scale=nan", "lr=1e-46", "momentum=-0.5", "betas=[0.9,1.0]", "eval_eps=1e-46", "lr=1e39", "warmup_epochs=inf",
])
def test_a_meaningless_setting_stops_the_command_before_any_folder(item, tmp_path, capsys):
    from test_bad_inputs import refused_line, tree

    method = "bmtard" if any(k in item for k in ("tau_rate", "temperature", "init_std")) else "trades" if "beta=" in item else "rslad"
    before = tree(tmp_path)
    line = refused_line(item, ["distill", "--method", method, "--preset", "mini", "--set", item, "--runs-dir", str(tmp_path / "runs"),
                               "--data-dir", str(tmp_path / "data")], capsys)
    assert item.split("=")[0].split(".")[-1] in line
    assert tree(tmp_path) == before
