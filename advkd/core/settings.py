"""Settings coercion: check user-typed values against dataclass field annotations.

:func:`apply_overrides` (a dataclass copy with ``--set``/preset overrides applied, each value
checked by :func:`coerce` against :func:`field_types`) serves both the run config
(:mod:`advkd.training.config`) and every method's parameter dataclass (:mod:`advkd.methods`), so it
lives below both.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from advkd.core.errors import AdvkdError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


#: Number text a user may type for a float field (YAML 1.1 leaves ``2e-4``, ``1E9`` as strings).
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FLOAT_TEXT = re.compile(_NUMBER_TEXT.pattern + r"|[-+]?inf(?:inity)?", re.IGNORECASE)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (already YAML-parsed) against annotation ``tp``; convert int->float only.

    A float field also takes number text (``2e-4``, ``1E9``, ``.5``, ``5.``, ``-1e-3``, ``+3``,
    ``inf``); NaN is never a setting. Whether infinity makes sense is the field's own check
    (:meth:`TrainConfig.validate` requires finite optimiser values). Int fields stay strict.
    """
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
        if isinstance(value, float) or (isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())):
            raise AdvkdError(f"{key} must be an integer written with digits only (e.g. 1000, not 1e3 or 1000.0), got {value!r}")
        raise AdvkdError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise AdvkdError(f"{key} must be a number, got nan")
            return float32_representable(float(value), key)
        raise AdvkdError(f"{key} must be a number (e.g. 0.1, 2e-4, 5), got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise AdvkdError(f"{key} must be a string, got {value!r}")
    raise AdvkdError(f"{key}: cannot check values of type {_type_name(tp)}")


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive float32 (subnormal)


def float32_representable(value: float, key: str) -> float:
    """``value`` if float32 holds it; settings (lr, eps, loss weights) are used in float32 tensors,
    where 1e39 becomes inf and 1e-50 becomes 0 a whole epoch later. Infinity itself passes: whether
    it makes sense is the field's own check."""
    if math.isfinite(value) and (abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY):
        raise AdvkdError(f"{key} = {value:g} is outside float32's range (the precision it is used in: "
                         f"{FLOAT32_TINY:.1e} to {FLOAT32_MAX:.1e} in magnitude, or 0)")
    return value


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

