"""Operating-system failures as one line a user can act on.

A full disk, a read-only or foreign-owned runs dir, a name longer than the file system allows or
a file where a folder should be are the user's to fix, not bugs: :func:`describe` names the path
and the fix (the CLI prints it with exit code 2), and :func:`check_writable` finds the problem
before any work is done, so an attack of many minutes is not lost at the final write.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from advkd.core.errors import AdvkdError

FIXES = {
    errno.EACCES: "check its permissions, or pass another --runs-dir",
    errno.EPERM: "check its permissions, or pass another --runs-dir",
    errno.EROFS: "the file system is read-only: pass a --runs-dir on a writable one",
    errno.ENOSPC: "the disk is full: free some space or pass a --runs-dir on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space or pass a --runs-dir elsewhere",
    errno.ENAMETOOLONG: "the name is too long for the file system: use a shorter --name or path",
    errno.ENOTDIR: "a file stands where a folder is needed: move it away or choose another path",
    errno.EISDIR: "it is a folder: give a file path",
    errno.EEXIST: "something is already there: move it away or choose another path",
    errno.ENOENT: "it does not exist: check the path",
}

# an errno inside another library's message: safetensors' Rust I/O errors read
# "IoError(Os { code: 28, kind: StorageFull, ... })" or "I/O error: No space left on device (os error 28)"
_ERRNO_IN_TEXT = re.compile(r"code:\s*(\d+)|\(os error (\d+)\)")


def errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or of an I/O error another library wraps into its own exception."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    text = str(exc)
    match = _ERRNO_IN_TEXT.search(text)
    if match is None or not ("IoError" in text or "I/O error" in text):
        return None
    return int(match.group(1) or match.group(2))


def is_os_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or (type(exc).__name__ == "SafetensorError" and errno_of(exc) is not None)


def describe(exc: BaseException) -> str:
    """``cannot write <path>: <reason>; <fix>`` in one line."""
    code = errno_of(exc)
    given = exc.strerror if isinstance(exc, OSError) and exc.strerror else None  # may carry more, e.g. the space a write needed
    reason = given or (os.strerror(code) if code is not None else str(exc))
    path = getattr(exc, "filename", None)
    where = f" at {path}" if path else ""
    return f"operating-system error{where}: {reason}; {FIXES.get(code, 'check the path and the disk')}"


def check_writable(folder: str | Path, *, what: str = "--runs-dir") -> None:
    """Raise an AdvkdError unless ``folder`` is (or can be created as) a writable folder.

    Creates nothing: it walks up to the nearest existing ancestor and checks that one.
    """
    path = Path(folder)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise AdvkdError(f"{what} {path}: {probe} is a file, not a folder; move it away or pass another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AdvkdError(f"{what} {path}: {probe} is not writable; check its permissions or pass another {what}")
