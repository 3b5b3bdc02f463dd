"""The one exception type for mistakes a user can fix, and Ctrl-C as advkd raises it (:class:`Interrupted`).

The CLI turns an :class:`AdvkdError` into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.

The same engine serves ``advkd distill --teacher T`` and ``advkd.build_method("rslad",
teachers={"teacher": model})``, so a message that names the fix must name what *this* user typed:
:func:`spell` picks the CLI flag while the ``advkd`` command runs (:func:`cli_spelling`, entered by
the CLI's ``main``) and the Python argument otherwise.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType

_IN_CLI: ContextVar[bool] = ContextVar("advkd_in_cli", default=False)


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


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Inside this block messages name CLI flags (:func:`spell`); the CLI's ``main`` runs every command in it."""
    token = _IN_CLI.set(True)
    try:
        yield
    finally:
        _IN_CLI.reset(token)


def spell(flag: str, argument: str) -> str:
    """``flag`` (``--teacher``) while the ``advkd`` command runs, ``argument`` (``teachers={'teacher': ...}``)
    when the call came from Python: a message names the setting the way its reader passed it."""
    return flag if _IN_CLI.get() else argument


@contextmanager
def warnings_kept_if_it_works() -> Iterator[None]:
    """Third-party warnings raised inside the block reach the user only if the block succeeds: a
    refused load (a bad pickle, an unknown model) is said in advkd's one error line, without the
    library's warnings about the file it then refused."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
