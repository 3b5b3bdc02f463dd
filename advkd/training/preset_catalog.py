"""The presets a run can name, where each file lives and what it is for (``advkd presets list|show``).

Names resolve as ``--preset NAME`` does (:func:`advkd.training.config.load_preset`):
``$ADVKD_PRESET_DIR`` first, then the shipped ones, so a user file with a shipped name hides the
shipped file; the listing marks it, because every run that names the preset then uses the user's.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from advkd.core.errors import AdvkdError
from advkd.training.config import PRESET_DIR, load_preset, preset_dirs

SHIPPED = "shipped"
USER = "$ADVKD_PRESET_DIR"


@dataclass(frozen=True)
class PresetInfo:
    """One preset name as ``--preset NAME`` resolves it."""

    name: str
    path: Path
    origin: str  # SHIPPED or USER
    scale: str  # "" when the file does not load
    summary: str  # the description's headline, or why the file does not load
    hides_shipped: bool = False  # a user file named like a shipped preset

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def headline(description: str) -> str:
    """The first sentence of a description, up to its first colon outside brackets (the list of
    settings that follows is what ``presets show`` is for)."""
    text = " ".join(description.split())
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", text, maxsplit=1)[0]
    depth = 0
    for i, ch in enumerate(sentence):
        depth += (ch in "([") - (ch in ")]")
        if ch == ":" and depth == 0:
            return sentence[:i]
    return sentence.rstrip(".")


def _info(path: Path, origin: str, hides_shipped: bool) -> PresetInfo:
    try:
        preset = load_preset(str(path))
        scale, summary = preset.scale, headline(preset.description)
    except (AdvkdError, OSError) as e:  # one broken user file must not hide the others
        scale, summary = "", f"does not load: {' '.join(str(e).split())}"
    return PresetInfo(path.stem, path, origin, scale, summary, hides_shipped)


def list_preset_infos() -> list[PresetInfo]:
    """Every preset name, sorted, each with the file ``--preset NAME`` would load."""
    shipped = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    out: dict[str, PresetInfo] = {}
    for folder in preset_dirs():
        origin = SHIPPED if folder == PRESET_DIR else USER
        for path in sorted(folder.glob("*.yaml")):
            if path.stem not in out:
                out[path.stem] = _info(path, origin, hides_shipped=origin == USER and path.stem in shipped)
    return [out[n] for n in sorted(out)]


def find_preset(name: str) -> PresetInfo:
    """The preset ``--preset NAME`` would load; AdvkdError listing the known names otherwise."""
    infos = {i.name: i for i in list_preset_infos()}
    if name not in infos:
        raise AdvkdError(f"unknown preset {name!r}; valid: {', '.join(infos) or 'none'}")
    return infos[name]


def show_preset(name: str) -> str:
    """A comment line naming where preset ``name`` lives, then its file verbatim (still a preset:
    ``advkd presets show mini > mine.yaml`` gives a file to edit and pass as ``--preset mine.yaml``)."""
    info = find_preset(name)
    raw = info.path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AdvkdError(f"preset {info.path} is not a text file (not UTF-8)") from None
    where = f"{info.origin} preset {info.name}" + (", in place of the shipped one" if info.hides_shipped else "")
    return f"# {where}: {info.path}\n{text}" + ("" if text.endswith("\n") or not text else "\n")


def _origin_text(info: PresetInfo) -> str:
    return f"{info.origin} (hides the shipped {info.name})" if info.hides_shipped else info.origin


def presets_table(infos: list[PresetInfo]) -> Table:
    """The ``presets list`` table: name, scale, headline, origin and path of each preset."""
    extra = os.environ.get("ADVKD_PRESET_DIR")
    note = f"$ADVKD_PRESET_DIR={extra} is not a folder: only shipped presets" if extra and not Path(extra).is_dir() else ""
    table = Table(title=f"{len(infos)} preset(s); show one with: advkd presets show NAME", title_justify="left", caption=note or None,
                  caption_justify="left")
    for col in ("name", "scale", "description", "from", "path"):
        table.add_column(col, overflow="fold")
    for i in infos:
        table.add_row(i.name, i.scale or "?", i.summary, _origin_text(i), str(i.path))
    return table
