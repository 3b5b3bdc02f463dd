"""Method registry: ``build(name, teachers={role: module}, **hparams)``.

Importing this package registers every method module below.

Pipeline stage 3: the training methods (what one batch's inner maximisation and loss are).
Holds ``registry`` (``METHODS``, ``@register``), ``base`` (``Method``, ``InnerParams``), ``losses``
and one module per method. May import: ``advkd.core`` and ``advkd.attacks`` (the shared PGD
engine, ``training_mode``); never data, models, training or evaluation.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from advkd.core.errors import AdvkdError, spell
from advkd.core.settings import apply_overrides
from advkd.methods.base import InnerParams, Method
from advkd.methods.registry import METHODS, register

ROLE_FLAGS = {"teacher": "--teacher", "clean_teacher": "--clean-teacher", "robust_teacher": "--robust-teacher"}


def list_methods(*, teacher_free: bool | None = None) -> list[str]:
    names = METHODS.names()
    if teacher_free is None:
        return names
    return [n for n in names if (not METHODS.get(n).roles) == teacher_free]


def method_roles(name: str) -> tuple[str, ...]:
    return METHODS.get(name).roles


def role_text(roles: list[str] | tuple[str, ...], *, keywords: bool = False) -> str:
    """How the user names teacher ``roles``: ``--clean-teacher and --robust-teacher`` in the CLI,
    ``teachers={'clean_teacher': ..., 'robust_teacher': ...}`` from Python (``keywords``: the
    roles are the caller's own keyword arguments, as in :func:`advkd.api.distill`)."""
    python = " and ".join(f"{r}=..." for r in roles) if keywords else "teachers={" + ", ".join(f"'{r}': ..." for r in roles) + "}"
    return spell(" and ".join(ROLE_FLAGS.get(r, r) for r in roles), python)


def check_roles(name: str, given: set[str], *, keywords: bool = False) -> None:
    """AdvkdError when the teacher roles given do not match what method ``name`` needs; the
    message names flags or Python arguments (:func:`role_text`)."""
    cls = METHODS.get(name)
    need = set(cls.roles)
    missing = sorted(need - given)
    extra = sorted(given - need)
    if missing:
        raise AdvkdError(f"method {cls.name} needs {role_text(missing, keywords=keywords)}")
    if extra:
        wanted = role_text(cls.roles, keywords=keywords) if cls.roles else "no teacher"
        raise AdvkdError(f"method {cls.name} does not take {role_text(extra, keywords=keywords)}; it takes {wanted}")


def params_for(name: str, hparams: dict[str, Any]) -> Any:
    """The method's parameter dataclass with ``hparams`` applied (unknown keys, bad types rejected)."""
    cls = METHODS.get(name)
    return apply_overrides(cls.Params(), hparams, where=f"method {cls.name} parameters{spell(' (--set method.KEY=VALUE)', '')}")


def build(
    name: str,
    teachers: dict[str, nn.Module] | None = None,
    *,
    num_classes: int = 10,
    dataset: str = "cifar10",
    **hparams: Any,
) -> Method:
    """Instantiate method ``name`` with frozen ``teachers`` and hyper-parameter overrides.

    ``teachers`` maps each teacher role the method takes to an ``nn.Module`` on [0, 1] images
    (the CLI's ``--teacher`` / ``--clean-teacher`` / ``--robust-teacher``): ``{"teacher": m}`` for
    the single-teacher methods (rslad, adaad, ard, ...), ``{"clean_teacher": c, "robust_teacher": r}``
    for the two-teacher ones (mtard, bmtard, ...), nothing for natural, pgd-at, trades, score;
    :func:`method_roles` lists a method's roles. A missing or extra role is an AdvkdError naming
    the keys. ``hparams``: the method's parameters (``beta=6``; ``--set method.KEY=VALUE`` in the CLI).
    """
    teachers = dict(teachers or {})
    cls = METHODS.get(name)
    check_roles(cls.name, set(teachers))
    return cls(teachers, params_for(cls.name, hparams), num_classes=num_classes, dataset=dataset)


def _register_all() -> None:
    """Import every module of this package once, so each method registers itself."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in ("base", "losses"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()

__all__ = ["METHODS", "InnerParams", "Method", "build", "register", "check_roles", "list_methods", "method_roles", "params_for"]
