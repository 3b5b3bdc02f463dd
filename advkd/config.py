"""Run configuration: one typed dataclass, presets, and the layering that fills it.

Layering (later wins): dataclass defaults < preset ``train`` < preset per-method ``train`` <
``--set key=value`` < explicit CLI flags. Method hyper-parameters live in ``method`` and are
layered the same way (method defaults < preset < ``--set method.k=v``); they are type-checked
against the method's own parameter dataclass when the method is built.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from advkd.epsilon import parse_eps
from advkd.errors import AdvkdError

PRESET_DIR = Path(__file__).parent / "presets"

SELECT_METRICS = ("pgd10", "robust", "clean", "w_robust", "last")


@dataclass
class TrainConfig:
    """Everything one ``pretrain-teacher`` or ``distill`` run needs; saved as ``config.yaml``.

    Defaults are the AdaAD paper's schedule (spec single-teacher section 1).
    """

    kind: str = "distill"  # "pretrain-teacher" | "distill"
    method: str = "rslad"
    arch: str = "resnet18"  # the network being trained (the student, or the teacher when pretraining)
    paper_arch: str = ""  # the architecture the run stands for (differs from arch under a mini preset)
    dataset: str = "cifar10"
    teachers: dict[str, str] = field(default_factory=dict)  # role -> teacher spec as given by the user
    preset: str = ""
    scale: str = "paper"  # "paper" | "mini" | "custom": which scale produced the numbers
    # optimisation (SGD)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["piecewise", "cosine"] = "piecewise"
    milestones: list[int] = field(default_factory=lambda: [100, 150])  # 0-indexed epochs where lr *= lr_gamma
    lr_gamma: float = 0.1
    # data
    train_subset: int = 0  # 0 = the whole training split; N = its first N images
    augment: bool = True
    normalize: str = "none"  # input normalisation layer inside the model (models see [0,1] pixels)
    # per-epoch evaluation and checkpoint selection
    eval_examples: int = 1000  # first N test images
    eval_attack: str = "pgd10"  # "" = clean only
    eval_eps: str = "8/255"
    eval_batch_size: int = 256
    eval_every: int = 1  # evaluate after every N-th epoch (and after the first and the last)
    eval_dense_from: int = 0  # from this 0-indexed epoch on, evaluate every epoch (B-MTARD: 215); 0 = off
    select: str = "pgd10"  # pgd10 (robust acc under eval_attack) | clean | w_robust | last
    save_every: int = 0  # also keep epoch-NNN.safetensors every N epochs (0 = never)
    seed: int = 0
    name: str = ""
    method_params: dict[str, Any] = field(default_factory=dict)  # method.* hyper-parameters
    arch_map: dict[str, str] = field(default_factory=dict)  # paper arch -> stand-in (mini presets)

    def validate(self) -> None:
        """Reject values no run could use, with one line naming the field and the fix."""
        for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise AdvkdError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("train_subset", "eval_examples", "save_every", "eval_dense_from"):
            if getattr(self, key) < 0:
                raise AdvkdError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise AdvkdError(f"lr must be > 0, got {self.lr}")
        if self.select not in SELECT_METRICS:
            raise AdvkdError(f"select must be one of {', '.join(SELECT_METRICS)}, got {self.select!r}")
        if self.select in ("pgd10", "robust", "w_robust") and not self.eval_attack:
            raise AdvkdError(f"select={self.select} needs an eval_attack; set select=clean or eval_attack=pgd10")
        if sorted(self.milestones) != list(self.milestones):
            raise AdvkdError(f"milestones must be increasing, got {self.milestones}")
        parse_eps(self.eval_eps, what="eval_eps")


# ----------------------------------------------------------------------------- type coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (already YAML-parsed) against annotation ``tp``; convert int->float only."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise AdvkdError(f"{key} must be one of {', '.join(map(str, get_args(tp)))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return coerce(value, arg, key)
            except AdvkdError as e:
                errors.append(str(e))
        raise AdvkdError(errors[-1] if errors else f"{key} has a bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value] if not isinstance(value, str) else [v for v in value.split(",") if v]
        (item,) = get_args(tp)[:1] or (Any,)
        return [coerce(v, item, f"{key}[]") for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise AdvkdError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise AdvkdError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise AdvkdError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise AdvkdError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise AdvkdError(f"{key} must be a string, got {value!r}")
    raise AdvkdError(f"{key}: cannot check values of type {_type_name(tp)}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(obj: Any, overrides: dict[str, Any], *, where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` applied, type-checked per field."""
    types_ = field_types(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in types_:
            valid = ", ".join(sorted(types_)) or "none (it takes no settings)"
            raise AdvkdError(f"unknown key {key!r} in {where}; valid: {valid}")
        changes[key] = coerce(value, types_[key], key)
    return dataclasses.replace(obj, **changes)


def parse_set(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--set key=value`` items into (train overrides, method overrides).

    Values are parsed as YAML scalars/lists (``0.1``, ``true``, ``[100, 150]``); ``a/b`` stays a
    string so eps values keep their exact text.
    """
    train: dict[str, Any] = {}
    method: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise AdvkdError(f"--set {item!r} is not key=value; e.g. --set lr=0.05 or --set method.beta=6")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) or value is None:
            value = raw.strip()
        if key.startswith("method."):
            method[key[len("method."):]] = value
        else:
            train[key] = value
    return train, method


# ----------------------------------------------------------------------------- presets


@dataclass
class Preset:
    """A YAML file of settings for a scale and a paper; see ``advkd/presets/README``."""

    name: str
    path: Path
    description: str = ""
    scale: str = "paper"
    paper: str = ""
    deviations: list[str] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> {train: {...}, params: {...}}
    arch_map: dict[str, str] = field(default_factory=dict)

    def method_train(self, method: str) -> dict[str, Any]:
        return dict((self.methods.get(method) or {}).get("train") or {})

    def method_params(self, method: str) -> dict[str, Any]:
        return dict((self.methods.get(method) or {}).get("params") or {})


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(spec: str) -> Preset:
    """Load a preset by name (``mini``) or by path to a YAML file."""
    path = Path(spec)
    if not (spec.endswith((".yaml", ".yml")) or path.is_file()):
        path = PRESET_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise AdvkdError(f"unknown preset {spec!r}; valid: {', '.join(list_presets())} (or a path to a .yaml file)")
    elif not path.is_file():
        raise AdvkdError(f"preset file {spec} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise AdvkdError(f"preset {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise AdvkdError(f"preset {path} must be a YAML mapping with keys like train:, methods:")
    known = {f.name for f in dataclasses.fields(Preset)} - {"name", "path"}
    unknown = set(data) - known
    if unknown:
        raise AdvkdError(f"preset {path}: unknown top-level key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    try:
        preset = Preset(name=path.stem, path=path, **data)
    except TypeError as e:
        raise AdvkdError(f"preset {path}: {e}") from None
    for key in ("train", "methods", "arch_map"):
        if not isinstance(getattr(preset, key), dict):
            raise AdvkdError(f"preset {path}: {key} must be a mapping")
    return preset


def resolve_config(
    base: TrainConfig,
    *,
    preset: str | None,
    set_items: list[str] | None,
    flags: dict[str, Any],
) -> TrainConfig:
    """Layer defaults < preset < --set < explicit flags (flags with value None are absent)."""
    cfg = base
    set_train, set_method = parse_set(set_items)
    method_params: dict[str, Any] = {}
    method = flags.get("method") or cfg.method
    if preset:
        p = load_preset(preset)
        cfg = apply_overrides(cfg, p.train, where=f"preset {p.name} train")
        cfg = apply_overrides(cfg, p.method_train(method), where=f"preset {p.name} methods.{method}.train")
        method_params.update(p.method_params(method))
        cfg = dataclasses.replace(cfg, preset=p.name, scale=p.scale, arch_map=dict(p.arch_map))
    else:
        cfg = dataclasses.replace(cfg, scale="custom")
    cfg = apply_overrides(cfg, set_train, where="--set")
    cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None}, where="flags")
    method_params.update(cfg.method_params)
    method_params.update(set_method)
    cfg = dataclasses.replace(cfg, method_params=method_params)
    cfg.validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return apply_overrides(TrainConfig(), data, where="config")
