"""Anchor-located edits to a reference script, applied at run time.

An :class:`Edit` names one line of the reference script by its stripped text (the anchor), the
text that replaces it, and why. Every anchor must match exactly one line, so an edit never lands
somewhere its author did not read; the replacement keeps the anchor line's indentation. Nothing of
the reference beyond these anchor lines is stored in this repository: the script is read from the
pinned commit of the user's checkout when the run starts.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Edit", "EditError", "apply_edits", "describe"]


class EditError(ValueError):
    """An anchor that matches no line or more than one (the checkout is not the pinned script)."""


@dataclass(frozen=True)
class Edit:
    anchor: str  # the stripped text of exactly one line of the reference script
    replace: str  # its replacement (several lines allowed; '' deletes the line), indentation added
    why: str  # one sentence: which of the allowed kinds of change this is and why it is needed


def apply_edits(text: str, edits: list[Edit], *, source: str) -> str:
    """``text`` with every edit applied, each replacement prefixed by a comment saying why."""
    lines = text.splitlines()
    for edit in edits:
        hits = [i for i, line in enumerate(lines) if line.strip() == edit.anchor]
        if len(hits) != 1:
            found = "no line" if not hits else f"{len(hits)} lines ({', '.join(str(i + 1) for i in hits)})"
            raise EditError(f"{source}: the anchor {edit.anchor!r} matches {found}; is this the pinned commit?")
        i = hits[0]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        new = [f"{indent}# advkd reference run: {edit.why}"]
        new += [indent + part if part else part for part in edit.replace.splitlines()] or [f"{indent}pass"]
        lines[i : i + 1] = new
    return "\n".join(lines) + "\n"


def describe(edits: list[Edit]) -> list[dict[str, str]]:
    """The edits as a record (config.yaml of the run keeps them)."""
    return [{"anchor": e.anchor, "replace": e.replace, "why": e.why} for e in edits]
