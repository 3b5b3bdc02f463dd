"""The one exception type for mistakes a user can fix.

The CLI turns an :class:`AdvkdError` into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations


class AdvkdError(Exception):
    """A user-fixable problem: bad flag value, missing file, mismatched checkpoint, bad YAML.

    The message must name the problem and, where possible, the fix, on one line.
    """


class Interrupted(BaseException):
    """Ctrl-C, raised by advkd's own SIGINT handler (:func:`advkd.entry.interrupt_handler`).

    Not a KeyboardInterrupt, which Typer turns into a silent exit 130 before advkd could say
    how to resume. A BaseException, so cleanup code that catches Exception does not swallow it.
    """
