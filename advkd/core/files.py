"""The one door for every file advkd creates, replaces, appends to or removes.

Checkpoints, resume states, run files, records and their side files, locks, attack states,
figures and caches are all written here, so the rules hold at the mechanism, not per caller
(tests/test_one_write_path.py fails on a writer elsewhere in the package):

- **No symlink below the runs dir is followed.** The runs dir (and any other folder given to
  :func:`register_root`) may itself be a link -- a runs dir on another disk -- but every component
  below it is opened one at a time, relative to its parent's descriptor, with ``O_NOFOLLOW``
  (``O_DIRECTORY`` for folders). A link anywhere there is refused with one line that names it; it
  cannot be swapped in between a check and the write, because there is no separate check: the
  open that refuses it is the open that writes. Paths outside every root (an explicit ``--out``,
  the user's cache) trust their parent folder as the user named it; the file itself is still
  never a link.
- **Atomic replace.** A replaced file is written to a new temp file (created exclusively, beside
  the target, through the same folder descriptor), fsynced, and renamed over the target; a crash
  leaves the old file or nothing, never a partial one.
- **New files exclusively, appends in place.** :func:`open_file` maps the usual modes to flags
  (``x`` exclusive, ``a`` append, ``w`` truncate), always no-follow and close-on-exec.
- **One line.** Every refusal is an AdvkdError naming the path and the link or file in the way.

Standard library only: cheap to import from any layer.
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
from typing import BinaryIO

from advkd.core.errors import AdvkdError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_ROOTS: set[str] = set()  # absolute, normalised (not resolved) folders below which no link is followed


def register_root(root: str | Path) -> None:
    """Declare ``root`` (a runs dir) a folder below which advkd follows no symlink when it writes."""
    _ROOTS.add(os.path.abspath(root))


def _anchor(path: str | Path) -> tuple[str, list[str]]:
    """(the folder the walk starts from, the components below it). The deepest registered root
    that holds ``path`` anchors it; outside every root, the path's own parent does."""
    full = os.path.abspath(path)
    best = ""
    for root in _ROOTS:
        if (full == root or full.startswith(root.rstrip(os.sep) + os.sep)) and len(root) > len(best):
            best = root
    if not best:
        best = os.path.dirname(full)
    rest = os.path.relpath(full, best)
    return best, [] if rest == "." else rest.split(os.sep)


def _refuse(path: str | Path, where: str, e: OSError, *, dfd: int | None = None) -> AdvkdError:
    """The one-line refusal for a link (ELOOP: O_NOFOLLOW met one; O_DIRECTORY says ENOTDIR first,
    so the entry is looked at in the folder ``dfd``) or a file where a folder should be."""
    at = f"{path} is" if str(where) == str(path) else f"{path}: {where} is"
    if e.errno == errno.ENOTDIR and dfd is not None:
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(os.path.basename(where), dir_fd=dfd, follow_symlinks=False).st_mode):
                e = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    if e.errno in (errno.ELOOP, errno.EMLINK):
        return AdvkdError(f"{at} a symlink; advkd writes nothing through a link below the runs dir (remove the link, "
                        "or pass the folder it points to as --runs-dir)")
    if e.errno == errno.ENOTDIR:
        return AdvkdError(f"{at} a file where a folder should be; move it away")
    raise e


@contextlib.contextmanager
def folder_fd(path: str | Path, *, create: bool = True, made: list[Path] | None = None) -> Iterator[int]:
    """A descriptor of the folder ``path``, opened component by component below its root, no link
    followed; missing folders are created (``made`` collects them, deepest last) unless
    ``create`` is false (then a missing one raises FileNotFoundError)."""
    root, parts = _anchor(path)
    if create and not os.path.isdir(root):  # the root itself, as the user named it (it may be a link)
        missing = [p for p in [Path(root), *Path(root).parents] if not os.path.lexists(p)]
        os.makedirs(root, exist_ok=True)
        if made is not None:
            made += reversed(missing)
    fd = os.open(root, os.O_RDONLY | DIRECTORY | CLOEXEC)
    try:
        at = Path(root)
        for part in parts:
            at = at / part
            try:
                nxt = _open_folder(part, fd, path, at)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made by another process meanwhile: open it as any other
                    os.mkdir(part, 0o777, dir_fd=fd)
                    if made is not None:
                        made.append(at)
                nxt = _open_folder(part, fd, path, at)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _open_folder(part: str, dfd: int, path: str | Path, at: Path) -> int:
    """The folder ``part`` of the folder ``dfd``, never through a link (refused in one line naming ``at``)."""
    try:
        return os.open(part, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _refuse(path, str(at), e, dfd=dfd) from None


def make_dirs(path: str | Path) -> list[Path]:
    """``mkdir -p`` that follows no link below the root; returns the folders it created."""
    made: list[Path] = []
    with folder_fd(path, made=made):
        pass
    return made


_MODES = {  # mode -> (open flags, fdopen mode)
    "rb": (os.O_RDONLY, "rb"),
    "r+b": (os.O_RDWR, "r+b"),
    "wb": (os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "wb"),
    "xb": (os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wb"),
    "ab": (os.O_WRONLY | os.O_CREAT | os.O_APPEND, "ab"),
    "a+b": (os.O_RDWR | os.O_CREAT | os.O_APPEND, "a+b"),
    "r+": (os.O_RDWR, "r+"),
    "w+": (os.O_RDWR | os.O_CREAT, "r+"),  # created if absent, not truncated (a lock file)
}


def open_file(path: str | Path, mode: str = "rb", *, perm: int = 0o666, encoding: str | None = None) -> BinaryIO:
    """``open(path, mode)`` through the one door: no link followed at the file or below the root,
    folders created for the modes that create. Modes: ``rb r+b wb xb ab a+b r+ w+`` (``w+``:
    read-write, created if absent, never truncated -- a lock file)."""
    flags, fmode = _MODES[mode]
    path = Path(path)
    with folder_fd(path.parent, create=bool(flags & os.O_CREAT)) as dfd:
        try:
            fd = os.open(path.name, flags | NOFOLLOW | CLOEXEC, perm, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):
                raise _refuse(path, str(path), e) from None
            raise
    return os.fdopen(fd, fmode, **({"encoding": encoding} if "b" not in fmode else {}))


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a new temp file beside ``path`` (binary, write-only); on success fsync it and rename
    it over ``path``.

    A crash or exception leaves the old file (or nothing) and no partial file behind. A link at
    ``path`` is refused, not replaced. The file gets the mode a plain ``open(path, "w")`` gives
    (``0o666 & ~umask``: 0644 under umask 022, 0664 under 002, so a group can read a shared runs
    dir), so the finished file appears, by rename, with its final mode.
    """
    path = Path(path)
    with folder_fd(path.parent) as dfd:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode):
                raise AdvkdError(f"{path} is a symlink; advkd replaces no file through a link (remove it)")
        tmp, fd = _create_temp(path.name, dfd)
        done = False
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)  # a rename never follows a link at its target
            done = True
            with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
                os.fsync(dfd)
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)


def _create_temp(name: str, dfd: int) -> tuple[str, int]:
    """Create ``.<name>.<random>.tmp`` exclusively in the folder ``dfd``; return its name and fd.
    Mode ``0o666 & ~umask``, as ``open()`` gives (unlike ``tempfile.mkstemp``'s 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | NOFOLLOW
    for _ in range(100):
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666, dir_fd=dfd)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file beside {name}")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_with(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_with(path: str | Path, writer: Callable[[BinaryIO], object], *, size: int | None = None) -> None:
    """``writer(f)`` into a temp file renamed over ``path``: the previous file stays whole and
    readable until the new one is complete. An I/O error a library wraps in its own exception
    comes out as the OSError it is, naming ``path``, so the CLI prints the one-line OS message
    instead of a traceback; on a full disk the message says how much the file needed (``size``,
    bytes, where the caller knows it) and how much was free."""
    from advkd.core.oserrors import errno_of

    try:
        with atomic_file(path) as f:
            writer(f)
    except Exception as e:
        code = e.errno if isinstance(e, OSError) else errno_of(e)
        if code is None:
            raise
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(code, f"{os.strerror(code)} ({_space_needed(Path(path), size)})", str(path)) from e
        if isinstance(e, OSError):
            raise
        raise OSError(code, os.strerror(code), str(path)) from e


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None, *, size: int | None = None) -> None:
    """A safetensors file through the one door (serialised in memory, written by :func:`atomic_file`)."""
    from safetensors.torch import save

    atomic_write_with(path, lambda f: f.write(save(tensors, metadata=metadata)), size=size)


def remove(path: str | Path) -> None:
    """Unlink ``path`` (a file or a link, never what a link points to); absent is fine."""
    path = Path(path)
    try:
        with folder_fd(path.parent, create=False) as dfd:
            os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def remove_dir(path: str | Path) -> None:
    """rmdir ``path`` if it is an empty folder (OSError otherwise, as os.rmdir)."""
    path = Path(path)
    with folder_fd(path.parent, create=False) as dfd:
        os.rmdir(path.name, dir_fd=dfd)


def remove_tree(path: str | Path) -> None:
    """Remove the folder ``path`` and everything in it, following no link (a link inside is
    removed, not entered; a link at ``path`` is refused and left); absent is fine, errors inside
    are ignored as rmtree's ignore_errors."""
    path = Path(path)
    try:
        with folder_fd(path.parent, create=False) as dfd:
            try:
                mode = os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return
            if stat.S_ISLNK(mode):
                raise _refuse(path, str(path), OSError(errno.ELOOP, "link"))
            if stat.S_ISDIR(mode):
                shutil.rmtree(path.name, dir_fd=dfd, ignore_errors=True)
            else:
                os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:
        pass


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
