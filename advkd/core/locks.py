"""File locks: one trainer per run dir, and whole-record appends to ``results.jsonl``.

Both are ``fcntl.flock`` locks, which the kernel releases when the holding process dies (even
by SIGKILL), so a crashed run never leaves a lock that blocks a rerun: the lock *file* may stay
behind, but nobody holds it. On platforms without ``fcntl`` the locks are no-ops.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from advkd.core.errors import AdvkdError, spell
from advkd.core.files import make_dirs, open_file, remove, remove_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"  # inside a run dir; hidden, so listings and comparisons of run files skip it


def _open_lock_file(path: Path) -> IO[str]:
    """The lock file, created if absent, through the one write path: never through a symlink, at
    the file or at a folder below the runs dir (a link there could make advkd create or write a
    file anywhere)."""
    return open_file(path, "w+", perm=0o644, encoding="ascii")


class RunLock:
    """The exclusive lock of one run dir, held for the whole training by one process.

    The lock file holds the owner's pid, for the refusal message. ``release`` removes the file
    while still holding the lock; an acquirer that locked a file that was removed meanwhile
    (checked by inode) tries again, so two processes can never both believe they hold it.
    """

    def __init__(self, path: Path, handle: IO[str] | None) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def acquire(cls, run_path: str | Path) -> RunLock:
        """Create ``run_path`` if needed and lock it, or raise AdvkdError naming the holder. A
        failure on the way (a full disk, no permission, a symlink at the lock file) removes what
        this call created -- the lock file, the run dir -- and names the file in one line."""
        run_path = Path(run_path)
        lock_path = run_path / LOCK_FILE
        if fcntl is None:  # pragma: no cover
            make_dirs(run_path)
            return cls(lock_path, None)
        made: list[Path] = []  # the folders this call created, outermost first
        handle = None
        try:
            while True:
                made += make_dirs(run_path)  # again each try: a failed first epoch removes the dir
                handle = _open_lock_file(lock_path)
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    pid = handle.read().strip() or "unknown"
                    handle.close()
                    handle = None
                    raise AdvkdError(f"run {run_path} is being trained by process {pid}; wait for it or use {spell('--name', 'name=...')}") from None
                try:
                    same = os.fstat(handle.fileno()).st_ino == os.stat(lock_path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                handle.close()  # the previous holder removed the file we locked: lock the new one
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            return cls(lock_path, handle)
        except (OSError, AdvkdError) as e:
            if handle is not None:
                handle.close()
                with contextlib.suppress(OSError, AdvkdError):
                    remove(lock_path)  # ours: we held the lock on it (or created it just now)
            for folder in reversed(made):
                with contextlib.suppress(OSError, AdvkdError):
                    remove_dir(folder)  # only if empty: nothing but what this call made
            if isinstance(e, AdvkdError):  # its own line already (a held lock, a link in the way)
                raise
            raise AdvkdError(f"cannot take the run lock {lock_path}: {e.strerror or e}; nothing was left behind "
                             f"(free space or fix the permissions, then run the command again)") from None

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError, AdvkdError):
            remove(self.path)  # the run dir may be gone already (a failed first epoch)
        self._handle.close()  # closing drops the flock
        self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(handle: IO, *, timeout: float = 60.0, what: str = "file") -> Iterator[None]:
    """Hold an exclusive flock on the open ``handle`` (blocking, polled up to ``timeout`` s)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise AdvkdError(f"{what} has been locked by another process for over {timeout:.0f}s; "
                                 "check for a stuck advkd process and try again") from None
            time.sleep(0.005)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
