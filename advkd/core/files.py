"""Atomic file writes (temp file beside the target, fsync, rename) and file hashes.

Every file advkd writes (checkpoints, run files, results, caches, figures) goes through
:func:`atomic_path`, so a crash leaves the old file or nothing, never a partial one. Standard
library only: cheap to import from any layer.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    A crash or exception leaves the old file (or nothing) and no partial file behind. The file gets
    the mode a plain ``open(path, "w")`` gives (``0o666 & ~umask``: 0644 under umask 022, 0664
    under 002, so a group can read a shared runs dir): the temp file is created with it, and
    restored on the temp file before the rename if the writer replaced it (safetensors writes
    0600), so the finished file appears, by rename, with its final mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path, mode = _create_temp(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) != mode:  # a writer that replaced the file (safetensors: 0600)
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create an empty, unique ``.<name>.<random>.tmp`` beside ``path``; return it and its mode.

    Unlike ``tempfile.mkstemp`` (always 0600) the mode is ``0o666 & ~umask``, as ``open()`` gives
    (read back from the new file, so the umask is never changed to learn it); O_EXCL makes the
    name ours alone, as mkstemp does.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"could not create a unique temporary file beside {path}")


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_with(path: str | Path, writer: Callable[[Path], None], *, size: int | None = None) -> None:
    """``writer(tmp)`` into a temp file renamed over ``path``: the previous file stays whole and
    readable until the new one is complete. An I/O error a library wraps in its own exception
    (safetensors' SafetensorError on a full disk) comes out as the OSError it is, naming ``path``,
    so the CLI prints the one-line OS message instead of a traceback; on a full disk the message
    says how much the file needed (``size``, bytes, where the caller knows it) and how much was free."""
    from advkd.core.oserrors import errno_of

    try:
        with atomic_path(path) as tmp:
            writer(tmp)
    except Exception as e:
        code = e.errno if isinstance(e, OSError) else errno_of(e)
        if code is None:
            raise
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(code, f"{os.strerror(code)} ({_space_needed(Path(path), size)})", str(path)) from e
        if isinstance(e, OSError):
            raise
        raise OSError(code, os.strerror(code), str(path)) from e


def _space_needed(path: Path, size: int | None) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    needed = f"the file needs about {_mb(size)}" if size else "the file did not fit"
    return f"{needed}, {_mb(free)} free in {path.parent}" if free is not None else needed


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@contextlib.contextmanager
def new_dirs_undone_on_failure(path: str | Path) -> Iterator[None]:
    """Run a library call that may create ``path`` (and missing parents) and then fail: on an
    exception, every folder of that chain that did not exist before is removed again if it is
    empty, so a command that fails leaves nothing behind (RobustBench's loader makes its model
    folders before it finds that it cannot download)."""
    chain = [p for p in [Path(path), *Path(path).parents] if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for p in chain:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
