"""Perturbation budgets given as exact fractions ("8/255") and kept as both text and float.

8/255 is not 0.031: storing the string beside the float keeps records unambiguous.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from advkd.core.errors import AdvkdError


@dataclass(frozen=True)
class Eps:
    text: str
    value: float

    def __str__(self) -> str:
        return self.text

    def __float__(self) -> float:
        return self.value


def parse_eps(spec: str | float | int | Eps, *, what: str = "eps") -> Eps:
    """Parse ``"8/255"``, ``"0.031"`` or a number; reject anything outside [0, 1]."""
    if isinstance(spec, Eps):
        return spec
    text = str(spec).strip()
    try:
        if "/" in text:
            num, den = text.split("/")  # exactly one slash: "8/255/3" is refused, not read as 8/85
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise AdvkdError(f"{what} {text!r} is not a number or fraction; write it like 8/255 or 0.031") from None
    if not 0.0 <= value <= 1.0 or value != value:
        raise AdvkdError(f"{what} {text!r} = {value:g} is outside [0, 1]; pixels are in [0, 1], so use e.g. 8/255")
    from advkd.core.settings import float32_representable

    float32_representable(value, f"{what} {text!r}")  # 1e-46 is 0 in the float32 images: an attack that moves nothing
    return Eps(text=text, value=value)
