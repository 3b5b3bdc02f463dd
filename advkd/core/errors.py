"""The one exception type for mistakes a user can fix, and Ctrl-C as advkd raises it (:class:`Interrupted`).

The CLI turns an :class:`AdvkdError` into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

from types import FrameType


class AdvkdError(Exception):
    """A user-fixable problem: bad flag value, missing file, mismatched checkpoint, bad YAML.

    The message must name the problem and, where possible, the fix, on one line.
    """


class Interrupted(BaseException):
    """Ctrl-C, raised by advkd's own SIGINT handler (:func:`interrupt_handler`, installed by :mod:`advkd.entry`).

    Not a KeyboardInterrupt, which Typer turns into a silent exit 130 before advkd could say
    how to resume. A BaseException, so cleanup code that catches Exception does not swallow it.
    """


def interrupt_handler(signum: int, frame: FrameType | None) -> None:
    """advkd's SIGINT handler: Ctrl-C becomes :class:`Interrupted` (installed by ``advkd.entry`` and the CLI)."""
    raise Interrupted()
