"""Run configuration: one typed dataclass, presets, and the layering that fills it.

Layering (later wins): dataclass defaults < the method's ``train_defaults`` < preset ``train`` <
preset per-method ``train`` < ``--set key=value`` < explicit CLI flags. Method hyper-parameters live in ``method`` and are
layered the same way (method defaults < preset < ``--set method.k=v``); they are type-checked
against the method's own parameter dataclass when the method is built.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError, spell
from advkd.core.preempt import parse_duration
from advkd.core.runs import KINDS, check_name
from advkd.core.safe_yaml import UnsafeYaml, load_yaml
from advkd.core.settings import apply_overrides, check_number, field_types, numeric_fields, range_of, setting
from advkd.data.loaders import DATASETS
from advkd.methods import METHODS
from advkd.models import canonical_arch
from advkd.training import preset_schema
from advkd.training.preset_schema import RULE_KEYS, SCALES, WHEN_KEYS, PresetSchema  # noqa: F401 (re-exported)


def shipped_preset_dir() -> Path:
    """The presets advkd ships: the package ``advkd.presets``. In the source tree it is the top-level
    ``presets/`` folder, which pyproject.toml maps into the package (``package-dir``), so a wheel
    holds it as ``advkd/presets/*.yaml`` and an editable install imports it from ``presets/``."""
    return Path(str(importlib.resources.files("advkd.presets")))


PRESET_DIR = shipped_preset_dir()

SELECT_METRICS = ("pgd10", "robust", "clean", "w_robust", "last")
OPTIMIZERS = ("sgd", "adamw")  # built by advkd.training.schedule.make_optimizer


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
    resolved_teachers: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> the checkpoint it resolved to (source, sha256, arch, paper_arch, method)
    preset_teachers: dict[str, str] = field(default_factory=dict)  # role -> the preset's default teacher
    preset: str = ""
    preset_file: str = ""  # the preset's YAML path when it is not a shipped one (presets/) (what --preset must be given again)
    scale: str = "paper"  # one of preset_schema.SCALES ("paper", "small", "mini", "custom"): which scale produced the numbers
    # optimisation: every reference script uses SGD; AdamW is the reduced scales' recipe (docs/scales.md)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    epochs: int = setting(200, ge=1)
    batch_size: int = setting(128, ge=1)
    lr: float = setting(0.1, gt=0)
    momentum: float = setting(0.9, ge=0)  # SGD
    weight_decay: float = setting(5e-4, ge=0)  # SGD: L2 added to the gradient; AdamW: decoupled decay (lr x wd per step)
    nesterov: bool = False  # SGD
    betas: list[float] = setting(default_factory=lambda: [0.9, 0.999], ge=0, lt=1)  # AdamW's moment decays
    adam_eps: float = setting(1e-8, gt=0)  # AdamW
    warmup_epochs: float = setting(0.0, ge=0)  # linear lr warm-up over the first N epochs (lr set before every batch while it lasts); 0 = none
    schedule: Literal["piecewise", "cosine"] = "piecewise"
    milestones: list[int] = setting(default_factory=lambda: [100, 150], ge=0)  # epochs completed after which lr *= lr_gamma
    lr_gamma: float = setting(0.1, gt=0)
    lr_step: Literal["epoch", "iteration"] = "epoch"  # set the lr once per epoch, or before every batch from the fractional epoch (SCORE)
    # data
    train_subset: int = setting(0, ge=0)  # 0 = the whole training split; N = its first N images
    augment: bool = True
    normalize: str = "none"  # input normalisation layer inside the model (models see [0,1] pixels)
    # per-epoch evaluation and checkpoint selection
    eval_examples: int = setting(1000, ge=0)  # first N test images
    eval_attack: str = "pgd10"  # "" = clean only
    eval_eps: str = "8/255"
    eval_batch_size: int = setting(256, ge=1)
    eval_every: int = setting(1, ge=1)  # evaluate after every N-th epoch (and after the first and the last)
    eval_dense_from: int = setting(0, ge=0)  # from this epoch number (1-based, as printed) on, evaluate every epoch (B-MTARD: 215); 0 = off
    select: str = "pgd10"  # pgd10 (robust acc under eval_attack) | clean | w_robust | last
    save_every: int = setting(0, ge=0)  # also keep epoch-NNN.safetensors every N epochs (0 = never)
    checkpoint_every: str = ""  # also write a mid-epoch resume state every DURATION of training (10m, 90s; "" = never)
    seed: int = setting(0, ge=0)
    name: str = ""
    variant: str = ""  # the --set method.* overrides, for the default run name (e.g. "tau_adv_init2")
    overrides: str = ""  # the training settings changed from the preset by flags or --set, for the default run name (e.g. "n1000")
    method_params: dict[str, Any] = field(default_factory=dict)  # method.* hyper-parameters
    method_origin: dict[str, str] = field(default_factory=dict)  # a plugin method's spec, distribution and version ({} for a built-in)
    arch_map: dict[str, str] = field(default_factory=dict)  # paper arch -> stand-in (mini presets)

    def validate(self) -> None:
        """Reject values no run could use, with one line naming the field and the fix: every number
        against its declared range (:func:`advkd.core.settings.setting`), then the relations."""
        for f in numeric_fields(TrainConfig):
            value = getattr(self, f.name)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(item, (int, float)) or isinstance(item, bool):
                    raise AdvkdError(f"{f.name} must be a number, got {item!r}")
                check_number(item, f.name, range_of(f))
        if self.kind not in KINDS:
            raise AdvkdError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.name:
            check_name(self.name)
        parse_duration(self.checkpoint_every)
        if self.optimizer not in OPTIMIZERS:
            raise AdvkdError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if len(self.betas) != 2:
            raise AdvkdError(f"betas must be two numbers in [0, 1) (AdamW's moment decays), got {self.betas}")
        if self.nesterov and self.optimizer != "sgd":
            raise AdvkdError(f"nesterov=true is an SGD setting; optimizer={self.optimizer} has none (set nesterov=false)")
        if self.nesterov and self.momentum <= 0:
            raise AdvkdError(f"nesterov=true needs momentum > 0, got momentum={self.momentum}; set momentum=0.9 or nesterov=false")
        if self.select not in SELECT_METRICS:
            raise AdvkdError(f"select must be one of {', '.join(SELECT_METRICS)}, got {self.select!r}")
        if self.select in ("pgd10", "robust", "w_robust") and not self.eval_attack:
            raise AdvkdError(f"select={self.select} needs an eval_attack; set select=clean or eval_attack=pgd10")
        if sorted(self.milestones) != list(self.milestones):
            raise AdvkdError(f"milestones must be increasing, got {self.milestones}")
        parse_eps(self.eval_eps, what="eval_eps")


def parse_set(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--set key=value`` items into (train overrides, method overrides).

    Values are parsed as YAML scalars/lists (``0.1``, ``true``, ``[100, 150]``); ``a/b`` stays a
    string so eps values keep their exact text, and so does number text YAML 1.1 does not know
    (``2e-4``, ``1E9``): :func:`coerce` reads it for float fields. A plain decimal integer is
    read in base 10 (YAML 1.1 would read ``010`` as octal 8), and a string-typed run setting
    (``name``, ``eval_eps`` ...) keeps the text as typed (``--set name=007`` is ``"007"``).
    YAML anchors and aliases are refused (:mod:`advkd.core.safe_yaml`); other text that is not
    YAML stays text.
    """
    str_keys = {k for k, tp in field_types(TrainConfig).items() if tp is str}
    train: dict[str, Any] = {}
    method: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise AdvkdError(f"--set {item!r} is not key=value; e.g. --set lr=0.05 or --set method.beta=6")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value = load_yaml(raw, source=spell(f"--set {key}", f"settings[{key!r}]")) if raw.strip() and key not in str_keys else ""
        except UnsafeYaml:
            raise
        except AdvkdError:  # not YAML: the text itself (type-checked against the field like any value)
            value = raw
        if re.fullmatch(r"[-+]?\d+", raw.strip()):
            value = int(raw.strip(), 10)
        if isinstance(value, str) or value is None or key in str_keys:
            value = raw.strip()
        if key.startswith("method."):
            method[key[len("method."):]] = value
        else:
            train[key] = value
    return train, method


# ----------------------------------------------------------------------------- presets


@dataclass
class Preset:
    """A YAML file of settings for one scale of one paper (the shipped ones: ``presets/``, see :func:`shipped_preset_dir`).

    ``train`` applies to every run; ``methods.<m>.train`` / ``methods.<m>.params`` to runs of
    method ``m``; then every rule of ``rules`` whose ``when`` (method, dataset and/or paper
    arch; a value or a list) matches the run, in file order: ``train``, ``params`` and
    ``teachers`` (default teacher per role, used when the command line names none).
    """

    name: str
    path: Path
    description: str = ""
    scale: str = "paper"
    paper: str = ""
    deviations: list[str] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> {train: {...}, params: {...}}
    rules: list[dict[str, Any]] = field(default_factory=list)
    arch_map: dict[str, str] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)  # what `report --plan` evaluates: n_examples, attack_examples, seeds; expected_accuracy: its budget prior

    def matching(self, run: dict[str, str]) -> list[dict[str, Any]]:
        """The ``methods`` entry of run["method"] followed by the matching rules."""
        out = [dict(self.methods.get(run["method"]) or {})]
        for rule in self.rules:
            when = rule.get("when") or {}
            if all(run.get(k) in (v if isinstance(v, list) else [v]) for k, v in when.items()):
                out.append(rule)
        return out


def preset_dirs() -> list[Path]:
    """Where preset names are looked up: ``$ADVKD_PRESET_DIR`` first (your own presets, or a
    shipped one overridden, e.g. tiny stand-ins for a test), then the shipped ones (:data:`PRESET_DIR`)."""
    extra = os.environ.get("ADVKD_PRESET_DIR")
    return ([Path(extra)] if extra else []) + [PRESET_DIR]


def list_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})


def check_saved_config(data: dict[str, Any], where: str) -> None:
    """A run's saved ``config.yaml`` type-checked against :class:`TrainConfig`'s fields."""
    preset_schema.check_saved_config(data, where, field_types(TrainConfig))


def load_preset(spec: str) -> Preset:
    """Load a preset by name (``mini``) or by path to a YAML file, checked by :class:`_PresetSchema`.

    ``scale:`` is required in a preset given as a path or found in ``$ADVKD_PRESET_DIR`` (the
    shipped ones all say theirs); without it a user's numbers would be recorded as paper-scale.
    """
    path = Path(spec)
    if not (spec.endswith((".yaml", ".yml")) or path.is_file()):
        path = next((d / f"{spec}.yaml" for d in preset_dirs() if (d / f"{spec}.yaml").is_file()), PRESET_DIR / f"{spec}.yaml")
        if not path.is_file():
            raise AdvkdError(f"unknown preset {spec!r}; valid: {', '.join(list_presets())} (or a path to a .yaml file)")
    elif not path.is_file():
        raise AdvkdError(f"preset file {spec} not found")
    data = load_yaml(path, source=f"preset {path}")
    if not isinstance(data, dict):
        raise AdvkdError(f"preset {path} must be a YAML mapping with keys like train:, methods:")
    known = [f.name for f in dataclasses.fields(Preset) if f.name not in ("name", "path")]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise AdvkdError(f"preset {path}: unknown top-level key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    shipped = path.resolve().parent == PRESET_DIR.resolve()
    settings = {k: tp for k, tp in field_types(TrainConfig).items() if k not in DERIVED_FIELDS}
    return Preset(name=path.stem, path=path, **PresetSchema(f"preset {path}", settings).check(data, user=not shipped))


def cached_preset(spec: str) -> Preset:
    """:func:`load_preset` once per spec and preset dir in a process: plans and tables ask for the
    same preset for every row. The object is shared, so callers must not modify it."""
    return _cached_preset(spec, os.environ.get("ADVKD_PRESET_DIR", ""))


@functools.lru_cache(maxsize=64)
def _cached_preset(spec: str, preset_dir: str) -> Preset:
    return load_preset(spec)


# The paper whose tables a method's runs fill by default (B-MTARD Table III's baselines are B-MTARD's).
PAPER_OF_METHOD = {m: "bmtard" for m in ("bmtard", "mtard", "lmtn", "fair-ard", "fair-rslad", "absld", "score")}
PAPER_DATASETS = ("cifar10", "cifar100", "tinyimagenet")


def default_preset(method: str, dataset: str) -> str | None:
    """The preset ``distill`` uses without ``--preset``: the recipe of the method's paper on that
    paper's datasets (``bmtard`` -> ``bmtard-paper``, ``rslad`` -> ``adaad-paper``); None elsewhere."""
    if DATASETS.canonical(dataset) not in PAPER_DATASETS:
        return None
    return f"{PAPER_OF_METHOD.get(METHODS.canonical(method), 'adaad')}-paper"


def _canonical_run(cfg: TrainConfig) -> dict[str, str]:
    """Canonical method, dataset and paper arch of a run, for matching preset rules."""
    return {
        "method": METHODS.canonical(cfg.method),
        "dataset": DATASETS.canonical(cfg.dataset),
        "arch": canonical_arch(cfg.paper_arch or cfg.arch),
    }


# TrainConfig fields advkd fills itself; a --set of one would make the record lie about the run
DERIVED_FIELDS = {
    "scale": "the scale is the preset's (--preset mini / small / a paper preset); any other run is recorded as custom",
    "preset": "pass --preset NAME",
    "preset_file": "pass --preset PATH.yaml",
    "preset_teachers": "teachers come from --teacher / --clean-teacher / --robust-teacher or the preset",
    "teachers": "pass --teacher / --clean-teacher / --robust-teacher",
    "resolved_teachers": "teachers are resolved from --teacher / --clean-teacher / --robust-teacher",
    "variant": "it is derived from the --set method.* overrides",
    "overrides": "it is derived from the flags and --set settings that change the preset's",
    "method_params": "set method parameters one by one with --set method.KEY=VALUE",
    "arch_map": "stand-in architectures come from the preset",
    "paper_arch": "it is derived from --arch / --student and the preset",
}


def _method_train_defaults(method: str) -> dict[str, Any]:
    return dict(METHODS.get(method).train_defaults)


def resolve_config(
    base: TrainConfig,
    *,
    preset: str | None,
    set_items: list[str] | None,
    flags: dict[str, Any],
) -> TrainConfig:
    """Layer defaults < the method's own training defaults < preset (train, methods, rules) <
    --set < explicit flags.

    Flags whose value is None are absent. Method hyper-parameters layer the same way. A method's
    training defaults are what its reference script does regardless of scale (SCORE sets the lr
    every iteration), so every preset inherits them unless it says otherwise.
    """
    set_train, set_method = parse_set(set_items)
    derived = sorted(set(set_train) & set(DERIVED_FIELDS))
    if derived:
        raise AdvkdError(f"{spell('--set ' + derived[0] + '=...', 'settings={' + repr(derived[0]) + ': ...}')} is not a setting: {DERIVED_FIELDS[derived[0]]}")
    given = {k: v for k, v in flags.items() if v is not None}
    probe = apply_overrides(apply_overrides(base, set_train, where="--set"), given, where="flags")
    base = apply_overrides(base, _method_train_defaults(probe.method), where=f"method {probe.method} training defaults")
    cfg = dataclasses.replace(base, scale="custom")
    method_params: dict[str, Any] = dict(base.method_params)
    if preset:
        p = load_preset(preset)
        cfg = apply_overrides(base, p.train, where=f"preset {p.name} train")
        run = _canonical_run(probe)
        teachers: dict[str, str] = {}
        for part in p.matching(run):
            cfg = apply_overrides(cfg, part.get("train") or {}, where=f"preset {p.name} ({run['method']})")
            method_params.update(part.get("params") or {})
            teachers.update(part.get("teachers") or {})
        shipped = p.path.resolve().parent in {d.resolve() for d in preset_dirs()}  # found again by name
        cfg = dataclasses.replace(cfg, preset=p.name, preset_file="" if shipped else str(p.path), scale=p.scale, arch_map=dict(p.arch_map), preset_teachers=teachers)
    before = cfg
    cfg = apply_overrides(cfg, set_train, where="--set")
    cfg = apply_overrides(cfg, given, where="flags")
    changed = {k: getattr(cfg, k) for k in BUDGET_FIELDS if getattr(cfg, k) != getattr(before, k)}
    method_params.update(set_method)
    cfg = dataclasses.replace(cfg, method_params=method_params, variant=variant_name(set_method), overrides=budget_name(changed))
    cfg.validate()
    from advkd.methods import params_for

    params_for(cfg.method, cfg.method_params)  # every method setting against its declared range, before any data or folder
    return cfg


# Settings that change what a run trains or which checkpoint it keeps, with their tag in a run
# name: a flag or --set that changes one from the preset's value is named in the default run name
# (``--train-subset 64 --batch-size 32`` -> ``...-b32-n64-s0``), so two budgets never share a run.
# ``epochs`` is not: ``--epochs N --resume`` extends a run (docs/training.md, --resume).
BUDGET_FIELDS = {
    "optimizer": "", "batch_size": "b", "lr": "lr", "momentum": "mom", "weight_decay": "wd", "nesterov": "nesterov", "betas": "betas",
    "adam_eps": "aeps", "warmup_epochs": "warm", "schedule": "sched",
    "milestones": "ms", "lr_gamma": "gamma", "lr_step": "lrstep", "train_subset": "n", "augment": "aug", "normalize": "norm",
    "eval_examples": "ev", "eval_attack": "evatk", "eval_eps": "eveps", "eval_every": "evevery", "eval_dense_from": "evdense", "select": "sel",
}


def budget_name(changed: dict[str, Any]) -> str:
    """``{"train_subset": 64, "batch_size": 32}`` -> ``"b32-n64"``."""
    return variant_name({BUDGET_FIELDS[k]: v for k, v in changed.items()})


def variant_name(params: dict[str, Any]) -> str:
    """``{"tau_adv_init": 2, "ebb": False}`` -> ``"ebbfalse-tau_adv_init2"``: a readable, stable suffix."""
    def text(v: Any) -> str:
        if isinstance(v, (list, tuple)):  # milestones [2, 3] -> 2_3
            return "_".join(map(str, v)) or "none"
        return str(v).lower() if isinstance(v, bool) else str(v)

    return "-".join(f"{k}{text(v)}".replace("/", "_") for k, v in sorted(params.items()))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return apply_overrides(TrainConfig(), data, where="config")


def evaluates(cfg: TrainConfig, number: int) -> bool:
    """Evaluate after epoch 1 and the last, every ``eval_every``-th, and every one from epoch
    ``eval_dense_from`` on (epoch numbers count from 1, as printed: B-MTARD's ``epoch >= 215``)."""
    dense = cfg.eval_dense_from > 0 and number >= cfg.eval_dense_from
    return number == 1 or number == cfg.epochs or number % cfg.eval_every == 0 or dense
