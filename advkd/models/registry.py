"""The architecture registry shared by every model family module.

Lives in its own module so the family modules can register into it without importing the
package ``__init__`` (which imports them), avoiding an import cycle.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from advkd.core.registry import Registry

ModelFactory = Callable[..., nn.Module]

#: name -> factory ``f(num_classes=..., **kwargs) -> nn.Module``. Every entry carries the meta
#: keys ``family`` (str) and ``stand_in`` (bool: True for tiny CPU stand-ins used in tests).
MODELS: Registry[ModelFactory] = Registry("architecture")
