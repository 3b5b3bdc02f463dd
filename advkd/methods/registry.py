"""The method registry: ``METHODS`` and the ``@register`` decorator every method module uses.

Its own module (as :mod:`advkd.models.registry` is for models), so the method modules import the
registry, not the package ``__init__`` that imports them. Outside methods come in through the
``advkd.methods`` entry points or a ``module:Class`` spec (:mod:`advkd.core.plugins`);
:func:`adopt_method` checks that such a class fits before it is registered.
"""
from __future__ import annotations

from typing import Any

from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, Origin, PluginSource, check_class
from advkd.core.registry import Registry, summary
from advkd.methods.base import Method

ROLES = ("teacher", "clean_teacher", "robust_teacher")


def adopt_method(registry: Registry[Any], name: str | None, cls: Any, origin: Origin) -> tuple[str, dict[str, Any]]:
    """Check an outside method class's contract; its key (its ``name``) and registry metadata."""
    check_class(cls, Method, "method", origin, "subclass advkd.plugins.InnerParams for an adversarial method")
    own = getattr(cls, "name", "")
    if not isinstance(own, str) or not own.strip():
        raise AdvkdError(f"method class {origin.spec} has no name: set the class attribute name = \"...\"")
    if name is not None and registry.key(own) != name:
        raise AdvkdError(f"method class {origin.spec} says name = {own!r} but its entry point is {name!r}: make them the same")
    bad = [r for r in getattr(cls, "roles", ()) if r not in ROLES]
    if bad:
        raise AdvkdError(f"method class {origin.spec} has teacher role {bad[0]!r}; roles are {', '.join(ROLES)}")
    return registry.key(own), {"roles": tuple(cls.roles)}


METHODS: Registry[type[Method]] = Registry("method", PluginSource(GROUPS["method"], adopt_method))


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register under ``cls.name``; help is the docstring's first paragraph."""
    METHODS.add(cls.name, cls, help=summary(cls.__doc__), roles=cls.roles)
    return cls
