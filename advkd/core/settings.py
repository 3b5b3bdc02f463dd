"""The settings schema: every numeric setting declared once, with its type and its range.

A setting is a dataclass field; :func:`setting` gives it a range (``ge``, ``gt``, ``le``, ``lt``)
that :func:`check_number` enforces wherever a value enters -- ``--set`` and presets
(:func:`apply_overrides`, for the run config of :mod:`advkd.training.config` and every method's
``Params``), and attack parameters (:mod:`advkd.attacks.engine`). Rules every number obeys, declared
or not: a float is finite (no inf, no nan), and float32 -- the precision settings are used in --
must hold it: a nonzero value that float32 rounds to 0 or to infinity, or that rounds out of its
declared range (``lt=1`` and 0.99999999), is refused, so a setting never silently means another.
"""
from __future__ import annotations

import dataclasses
import math
import re
import struct
import types
import typing
from typing import Any, Literal, get_args, get_origin

from advkd.core.errors import AdvkdError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


#: Number text a user may type for a float field (YAML 1.1 leaves ``2e-4``, ``1E9`` as strings).
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_FLOAT_TEXT = re.compile(_NUMBER_TEXT.pattern + r"|[-+]?inf(?:inity)?", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric setting's allowed values: bounds, each inclusive or not (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def text(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(x for x in (low, high) if x) or "any finite number"


ANY = Range()


def setting(default: Any = dataclasses.MISSING, help: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its range (and a one-line help): the one declaration of a setting."""
    meta = {"range": Range(ge=ge, gt=gt, le=le, lt=lt), "help": help}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_of(f: dataclasses.Field) -> Range | None:
    """The declared range of a field (None: undeclared; the rules for every number still apply)."""
    return f.metadata.get("range")


def check_number(value: int | float, key: str, rng: Range | None = None) -> int | float:
    """The checks every numeric setting passes: finite, held by float32 without changing its
    meaning (not rounded to 0, to inf, or out of its range), and inside its declared range."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AdvkdError(f"{key} must be a finite number, got {value}")
        float32_representable(value, key)
    if rng is not None:
        if not rng.holds(value):
            raise AdvkdError(f"{key} must be {rng.text()}, got {value!r}")
        if isinstance(value, float) and not rng.holds(float(struct.unpack("f", struct.pack("f", value))[0])):
            as32 = struct.unpack("f", struct.pack("f", value))[0]
            raise AdvkdError(f"{key} = {value!r} is {as32!r} in float32 (the precision it is used in), which is not {rng.text()}")
    return value


def coerce(value: Any, tp: Any, key: str, rng: Range | None = None) -> Any:
    """Check ``value`` (already YAML-parsed) against annotation ``tp`` and range ``rng``; convert
    int->float only.

    A float field also takes number text (``2e-4``, ``1E9``, ``.5``, ``5.``, ``-1e-3``, ``+3``);
    inf and nan are never a setting (:func:`check_number`). Int fields stay strict.
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
                return coerce(value, arg, key, rng)
            except AdvkdError as e:
                errors.append(str(e))
        raise AdvkdError(errors[-1] if errors else f"{key} has a bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value] if not isinstance(value, str) else [v for v in value.split(",") if v]
        (item,) = get_args(tp)[:1] or (Any,)
        return [coerce(v, item, f"{key}[]", rng) for v in value]
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
            return check_number(value, key, rng)
        if isinstance(value, float) or (isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())):
            raise AdvkdError(f"{key} must be an integer written with digits only (e.g. 1000, not 1e3 or 1000.0), got {value!r}")
        raise AdvkdError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise AdvkdError(f"{key} must be a number, got nan")
            return check_number(float(value), key, rng)
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
    where 1e39 becomes inf and 1e-50 becomes 0 a whole epoch later (infinity itself is refused by
    :func:`check_number`)."""
    if math.isfinite(value) and (abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY):
        raise AdvkdError(f"{key} = {value:g} is outside float32's range (the precision it is used in: "
                         f"{FLOAT32_TINY:.1e} to {FLOAT32_MAX:.1e} in magnitude, or 0)")
    return value


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(obj: Any, overrides: dict[str, Any], *, where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` applied, type- and range-checked per field."""
    types_ = field_types(type(obj))
    ranges = {f.name: range_of(f) for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in types_:
            valid = ", ".join(sorted(types_)) or "none (it takes no settings)"
            raise AdvkdError(f"unknown key {key!r} in {where}; valid: {valid}")
        changes[key] = coerce(value, types_[key], key, ranges[key])
    return dataclasses.replace(obj, **changes)


def numeric_fields(cls: type) -> list[dataclasses.Field]:
    """The int and float settings of dataclass ``cls`` (lists of them included): what must declare a range."""
    out = []
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        args = get_args(tp)
        if tp in (int, float) or (get_origin(tp) in (list, tuple) and args and args[0] in (int, float)):
            out.append(f)
    return out

