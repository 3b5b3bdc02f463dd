"""The method registry: ``METHODS`` and the ``@register`` decorator every method module uses.

Its own module (as :mod:`advkd.models.registry` is for models), so the method modules import the
registry, not the package ``__init__`` that imports them. Outside methods come in through the
``advkd.methods`` entry points or a ``module:Class`` spec (:mod:`advkd.core.plugins`);
:func:`adopt_method` checks that such a class fits before it is registered.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, Origin, PluginSource
from advkd.core.registry import Registry, summary
from advkd.methods.base import Method

ROLES = ("teacher", "clean_teacher", "robust_teacher")


def adopt_method(registry: Registry[Any], name: str | None, cls: Any, origin: Origin) -> str:
    """Register an outside method class after checking its contract; returns its name."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise AdvkdError(f"{origin.spec} is not a method: it must subclass advkd.plugins.Method")
    own = getattr(cls, "name", "")
    if not isinstance(own, str) or not own.strip():
        raise AdvkdError(f"method class {origin.spec} has no name: set the class attribute name = \"...\"")
    if name is not None and registry.key(own) != name:
        raise AdvkdError(f"method class {origin.spec} says name = {own!r} but its entry point is {name!r}: make them the same")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
        raise AdvkdError(f"method class {origin.spec} has no Params dataclass (subclass advkd.plugins.InnerParams for an adversarial method)")
    if inspect.isabstract(cls):
        raise AdvkdError(f"method class {origin.spec} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    bad = [r for r in getattr(cls, "roles", ()) if r not in ROLES]
    if bad:
        raise AdvkdError(f"method class {origin.spec} has teacher role {bad[0]!r}; roles are {', '.join(ROLES)}")
    key = registry.key(own)
    if key in registry.builtin_names():
        raise AdvkdError(f"method {key!r} from {origin.text()} clashes with the built-in method {key!r}; refused (give the class another name)")
    registry.add(key, cls, help=summary(cls.__doc__), roles=tuple(cls.roles), origin=origin)
    return key


METHODS: Registry[type[Method]] = Registry("method", PluginSource(GROUPS["method"], adopt_method))


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register under ``cls.name``; help is the docstring's first paragraph."""
    METHODS.add(cls.name, cls, help=summary(cls.__doc__), roles=cls.roles)
    return cls
