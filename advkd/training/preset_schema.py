"""The preset schema: every section of a preset (and a run's saved ``config.yaml``) checked when
it is loaded, so a mistake is one line naming the file and the key (``preset my.yaml:
methods.pgd-at: expected a mapping, got a list``) instead of a traceback or, worse, a setting
silently ignored (an unknown method's entry, a misspelt scale).

Its own module so that :mod:`advkd.training.config` stays the settings and their resolution; the
training fields a preset may set are passed in (no import of the config back).
"""
from __future__ import annotations

from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.plugins import is_spec
from advkd.core.settings import coerce, field_types
from advkd.data.loaders import DATASETS
from advkd.methods import METHODS

RULE_KEYS = ("when", "train", "params", "teachers", "note")
WHEN_KEYS = ("method", "dataset", "arch")
SCALES = ("paper", "small", "mini", "custom")  # a paper's own recipe, the reduced presets, anything else
METHOD_KEYS = ("train", "params", "teachers", "note")  # a methods.<m> entry
EVALUATION_KEYS = ("n_examples", "attack_examples", "seeds", "expected_accuracy")  # read by report --plan
NOT_PRESET_SETTINGS = {"kind": "the command sets it", "method": "--method sets it", "name": "--name sets it; a preset name would give every run one folder"}


def _kind(value: Any) -> str:
    """How a YAML value reads in a message: ``a list``, ``a mapping``, ``the text 'x'``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"a {type(value).__name__}"


class PresetSchema:
    """Checks one preset's parsed YAML and returns it normalised (canonical method, dataset and
    arch names, empty sections as ``{}``/``[]``); every refusal is one line naming file and key."""

    def __init__(self, where: str, settings: dict[str, Any]) -> None:
        self.where = where
        self.settings = settings  # the training settings a preset may set, name -> type

    def fail(self, key: str, problem: str) -> AdvkdError:
        return AdvkdError(f"{self.where}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key, f"keys must be text, got {_kind(k)}")
        return value

    def keys(self, value: dict[str, Any], allowed: tuple[str, ...] | list[str], key: str) -> None:
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key; valid: {', '.join(allowed)}")

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected text, got {_kind(value)}")
        return value

    def integer(self, value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(key, f"expected a whole number >= 0, got {_kind(value)}")
        return value

    def name(self, value: Any, key: str, registry: Any) -> str:
        """The canonical name of a method / dataset / arch (an installed plugin's by its entry-point
        name too), or one line listing the valid ones. A ``module:Class`` spec is refused: a preset
        never makes advkd import a module it names."""
        if isinstance(value, str) and is_spec(value):
            raise self.fail(key, f"{value!r} is a module:Class spec; presets name {registry.kind}s by name (an installed plugin's "
                                 f"entry-point name works), specs are for the command line")
        try:
            if not isinstance(value, str):
                raise AdvkdError("not a name")
            return registry.canonical(value)
        except AdvkdError:
            raise self.fail(key, f"unknown {registry.kind} {value!r}; valid: {', '.join(registry.names())}") from None

    def fields(self, values: dict[str, Any], types_: dict[str, Any], key: str, what: str) -> None:
        """Type-check ``values`` against dataclass field types (the same check as ``--set``)."""
        for k, v in values.items():
            if k not in types_:
                raise self.fail(f"{key}.{k}", f"unknown {what}; valid: {', '.join(sorted(types_)) or 'none'}")
            try:
                coerce(v, types_[k], f"{key}.{k}")
            except AdvkdError as e:
                raise AdvkdError(f"{self.where}: {e}") from None

    def train(self, value: Any, key: str) -> dict[str, Any]:
        values = self.mapping(value, key)
        for k in values:
            reason = NOT_PRESET_SETTINGS.get(k) or ("use the preset's top-level scale:" if k == "scale" else None)
            if reason:
                raise self.fail(f"{key}.{k}", f"not a preset setting ({reason})")
        self.fields(values, self.settings, key, "training setting")
        return dict(values)

    def params(self, value: Any, key: str, methods: list[str] | None) -> dict[str, Any]:
        """Method parameters, type-checked against each method they can apply to (all: keys only)."""
        values = self.mapping(value, key)
        for m in methods or []:
            self.fields(values, field_types(METHODS.get(m).Params), key, f"parameter of method {m}")
        return dict(values)

    def teachers(self, value: Any, key: str) -> dict[str, str]:
        from advkd.methods import ROLE_FLAGS

        values = self.mapping(value, key)
        self.keys(values, list(ROLE_FLAGS), key)
        return {role: self.text(spec, f"{key}.{role}") for role, spec in values.items()}

    def entry(self, value: Any, key: str, allowed: tuple[str, ...], methods: list[str] | None) -> dict[str, Any]:
        """A ``methods.<m>`` entry or a rule: train, params, teachers, note (a rule also has when)."""
        values = self.mapping(value, key)
        self.keys(values, allowed, key)
        out = dict(values)
        for part, check in (("train", self.train), ("teachers", self.teachers), ("note", self.text)):
            if part in values:
                out[part] = check(values[part], f"{key}.{part}")
        if "params" in values:
            out["params"] = self.params(values["params"], f"{key}.params", methods)
        return out

    def when(self, value: Any, key: str) -> dict[str, list[str]]:
        values = self.mapping(value, key)
        self.keys(values, WHEN_KEYS, key)
        registries = {"method": METHODS, "dataset": DATASETS, "arch": _models()}
        out = {}
        for k, v in values.items():
            items = v if isinstance(v, list) else [v]
            out[k] = [self.name(item, f"{key}.{k}", registries[k]) for item in items]
        return out

    def check(self, data: dict[str, Any], *, user: bool) -> dict[str, Any]:
        out = dict(data)
        if "scale" not in data:
            if user:
                raise self.fail("scale", f"missing; say which scale the preset's numbers are: {', '.join(SCALES)}")
        elif not isinstance(data["scale"], str) or data["scale"] not in SCALES:
            raise self.fail("scale", f"expected one of {', '.join(SCALES)}, got {_kind(data['scale'])}")
        for key in ("description", "paper"):
            if key in data:
                out[key] = self.text(data[key] if data[key] is not None else "", key)
        if "deviations" in data:
            items = data["deviations"] if data["deviations"] is not None else []
            if not isinstance(items, list):
                raise self.fail("deviations", f"expected a list of text, got {_kind(items)}")
            out["deviations"] = [self.text(d, f"deviations[{i}]") for i, d in enumerate(items)]
        if "train" in data:
            out["train"] = self.train(data["train"], "train")
        methods: dict[str, dict[str, Any]] = {}
        for given, entry in self.mapping(data.get("methods"), "methods").items():
            m = self.name(given, f"methods.{given}", METHODS)
            if m in methods:
                raise self.fail(f"methods.{given}", f"method {m} has two entries")
            methods[m] = self.entry(entry, f"methods.{given}", METHOD_KEYS, [m])
        out["methods"] = methods
        rules = data.get("rules") if data.get("rules") is not None else []
        if not isinstance(rules, list):
            raise self.fail("rules", f"expected a list of mappings, got {_kind(rules)}")
        out["rules"] = []
        for i, rule in enumerate(rules):
            key = f"rules[{i + 1}]"
            if not isinstance(rule, dict):
                raise self.fail(key, f"expected a mapping with when: and train: / params: / teachers:, got {_kind(rule)}")
            checked = self.entry(rule, key, RULE_KEYS, None)
            checked["when"] = self.when(checked.get("when"), f"{key}.when")
            if "params" in checked and "method" in checked["when"]:
                self.params(checked["params"], f"{key}.params", checked["when"]["method"])
            out["rules"].append(checked)
        arch_map = {}
        for paper_arch, stand_in in self.mapping(data.get("arch_map"), "arch_map").items():
            self.name(stand_in, f"arch_map.{paper_arch}", _models())
            arch_map[self.name(paper_arch, f"arch_map.{paper_arch}", _models())] = stand_in
        out["arch_map"] = arch_map
        out["evaluation"] = self.evaluation(data.get("evaluation"), "evaluation")
        return out

    def evaluation(self, value: Any, key: str) -> dict[str, Any]:
        values = self.mapping(value, key)
        self.keys(values, EVALUATION_KEYS, key)
        out = dict(values)
        if values.get("n_examples") is not None:
            self.integer(values["n_examples"], f"{key}.n_examples")
        if "attack_examples" in values:
            out["attack_examples"] = {a: self.integer(n, f"{key}.attack_examples.{a}") for a, n in self.mapping(values["attack_examples"], f"{key}.attack_examples").items()}
        if "seeds" in values:
            seeds = self.mapping(values["seeds"], f"{key}.seeds")
            out["seeds"] = {self.name(m, f"{key}.seeds.{m}", METHODS): self.integer(n, f"{key}.seeds.{m}") for m, n in seeds.items()}
        if "expected_accuracy" in values:
            prior = self.mapping(values["expected_accuracy"], f"{key}.expected_accuracy")
            self.keys(prior, ("clean", "robust"), f"{key}.expected_accuracy")
            for k, v in prior.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 100:
                    raise self.fail(f"{key}.expected_accuracy.{k}", f"expected a percentage in [0, 100], got {_kind(v)}")
            out["expected_accuracy"] = dict(prior)
        return out


def _models() -> Any:
    from advkd.models import MODELS

    return MODELS


def check_saved_config(data: dict[str, Any], where: str, types_: dict[str, Any]) -> None:
    """Type-check a run's saved ``config.yaml`` against the config's field types (the keys it
    knows: a setting an older or newer release saved is not compared, so not checked)."""
    for key, value in data.items():
        if not isinstance(key, str):
            raise AdvkdError(f"{where}: keys must be text, got {_kind(key)}")
        if key in types_:
            try:
                coerce(value, types_[key], key)
            except AdvkdError as e:
                raise AdvkdError(f"{where}: {e}") from None
