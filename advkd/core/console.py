"""A stdout console for tables that never cuts a cell.

Rich fits a table to the terminal and ellipsises what does not fit (``82.…``). On a terminal that
is the user's choice of width; piped into a file or a log (80 columns by default) it loses
numbers. So piped output gets the table's natural width.
"""
from __future__ import annotations

from typing import Any

from rich.console import Console

MAX_WIDTH = 400  # a long footer line wraps at this width instead of widening the table further


def print_wide(renderable: Any, console: Console | None = None) -> None:
    """Print ``renderable``; when stdout is not a terminal, at its natural (uncut) width."""
    console = console or Console()
    if not console.is_terminal:
        width = console.measure(renderable, options=console.options.update(max_width=MAX_WIDTH)).maximum
        if width > console.width:
            console = Console(width=width, file=console.file, color_system=None, force_terminal=False)
    console.print(renderable)
