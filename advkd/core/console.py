"""A stdout console for tables that never cuts a cell, nor breaks a path.

Rich fits a table to the terminal and ellipsises what does not fit (``82.…``). On a terminal that
is the user's choice of width; piped into a file or a log (80 columns by default) it loses
numbers. So piped output gets the table's natural width. A table's title and caption (the
attack table's checkpoint path) would still wrap at the table's width, folding a long path
mid-name: piped, they are printed above and below it, wrapped at spaces only (at the console's
width, or the table's where it is wider).
"""
from __future__ import annotations

import copy
import textwrap
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

MAX_WIDTH = 400  # a long footer line wraps at this width instead of widening the table further


def print_wide(renderable: Any, console: Console | None = None) -> None:
    """Print ``renderable``; when stdout is not a terminal, at its natural (uncut) width."""
    console = console or Console()
    if console.is_terminal:
        console.print(renderable)
        return
    width = console.measure(renderable, options=console.options.update(max_width=MAX_WIDTH)).maximum
    if width > console.width:
        console = Console(width=width, file=console.file, color_system=None, force_terminal=False)
    if isinstance(renderable, Table) and (renderable.title or renderable.caption):
        bare = copy.copy(renderable)
        bare.title = bare.caption = None
        _print_whole_words(console, renderable.title, console.width)
        console.print(bare)
        _print_whole_words(console, renderable.caption, console.width)
    else:
        console.print(renderable)


def _print_whole_words(console: Console, text: str | Text | None, width: int) -> None:
    """``text`` (Rich markup or Text) wrapped at ``width`` at spaces only: a word longer than the
    line, such as a path, stays whole on a line of its own."""
    if not text:
        return
    plain = console.render_str(text).plain if isinstance(text, str) else text.plain
    for line in plain.split("\n"):
        for part in textwrap.wrap(line, width=max(width, 1), break_long_words=False, break_on_hyphens=False) or [""]:
            console.print(part, markup=False, highlight=False, soft_wrap=True)
