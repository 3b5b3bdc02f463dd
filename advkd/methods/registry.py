"""The method registry: ``METHODS`` and the ``@register`` decorator every method module uses.

Its own module (as :mod:`advkd.models.registry` is for models), so the method modules import the
registry, not the package ``__init__`` that imports them.
"""
from __future__ import annotations

from advkd.core.registry import Registry, summary
from advkd.methods.base import Method

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register under ``cls.name``; help is the docstring's first paragraph."""
    METHODS.add(cls.name, cls, help=summary(cls.__doc__), roles=cls.roles)
    return cls
