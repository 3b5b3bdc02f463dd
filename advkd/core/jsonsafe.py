"""JSON output that every parser reads: no ``NaN`` / ``Infinity`` tokens.

Python's ``json.dumps`` writes ``NaN`` for a float nan, which is not JSON (``jq``, JavaScript and
strict readers refuse it). Every JSON advkd prints or writes for a reader goes through
:func:`dumps`: a non-finite number becomes ``null`` (unknown), which a table shows as an empty cell.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (dicts, lists and tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
