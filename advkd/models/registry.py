"""The architecture registry shared by every model family module.

Lives in its own module so the family modules can register into it without importing the
package ``__init__`` (which imports them), avoiding an import cycle.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, Origin, PluginSource
from advkd.core.registry import Registry

ModelFactory = Callable[..., nn.Module]

#: name -> factory ``f(num_classes=..., **kwargs) -> nn.Module``. Every entry carries the meta
#: keys ``family`` (str) and ``stand_in`` (bool: True for tiny CPU stand-ins used in tests).
def adopt_model(registry: Any, name: str | None, factory: Any, origin: Origin) -> tuple[str, dict[str, Any]]:
    """Check an outside architecture (``advkd.models`` entry point or ``module:attr``): a callable
    ``f(num_classes=..., **kwargs) -> nn.Module`` (a class or a function); a spec's name is the
    factory's ``name`` attribute, else its ``__name__`` in lower case."""
    if not callable(factory):
        raise AdvkdError(f"{origin.spec} is not a model factory: it must be a callable f(num_classes=..., **kwargs) -> nn.Module")
    key = registry.key(str(name or getattr(factory, "name", "") or getattr(factory, "__name__", "")))
    if not key:
        raise AdvkdError(f"model factory {origin.spec} has no name: set its attribute name = \"...\"")
    return key, {"family": "plugin", "stand_in": False}


MODELS: Registry[ModelFactory] = Registry("architecture", PluginSource(GROUPS["architecture"], adopt_model))
