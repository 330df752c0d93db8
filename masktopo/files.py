"""Safe file input and output: atomic writes, special files, staging folders.

The lowest layer of masktopo's I/O (no torch, no masks): :mod:`masktopo.store` writes mask files
through it and :mod:`masktopo.runs` run directories. Every problem is a one-line
:class:`~masktopo.errors.MaskFileError` naming the path.

Writes (:func:`atomic_write`):

- a regular file (or a new one) is written to a temporary file next to it, flushed, ``fsync``-ed
  and renamed over it, then the folder is ``fsync``-ed: readers see the old file or the complete
  new one, and a failure (a full disk, an exception while serializing, Ctrl-C) leaves the old file
  untouched and no temporary file behind;
- a symlink is followed: its target is replaced, the link stays;
- a character device or a FIFO (``/dev/null``, ``/dev/stdout``, a named pipe) is written directly,
  as a shell redirection would (there is nothing to replace);
- a block device, socket or folder is refused.

Reads (:func:`input_path`): the path must be a regular file or a folder (after following
symlinks); a FIFO or a device (which could block forever or never end) is refused, and a symlink
loop, a broken symlink or a permission problem each get their own message.

Multi-file outputs (:class:`Staging`): files are drawn into a hidden folder next to the
destination and moved into it only when all of them exist.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from .errors import MaskFileError, MaskValidationError

__all__ = [
    "TEMPORARY_NAME",
    "Staging",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_not_inputs",
    "input_path",
    "os_problem",
    "remove_temporary_files",
    "writable_file",
    "writable_folder",
]

#: File types described in messages, by ``stat.S_IFMT``.
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def require_parquet(command: str, what: str = "reads and writes parquet files") -> None:
    """Fail before any work, with one line naming ``masktopo COMMAND``, when pyarrow (the
    parquet engine, an optional dependency) is missing."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise MaskValidationError(
            f"masktopo {command} {what}, which needs pyarrow: pip install 'masktopo[parquet]' "
            "(or pyarrow)"
        )


def os_problem(e: OSError) -> str:
    """A short text for an OSError: its strerror (``"No space left on device"``) or its text."""
    if e.errno == errno.ELOOP:
        return "a symlink loop"
    return e.strerror or str(e) or type(e).__name__


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat(path)`` following symlinks; None when nothing is there (a broken symlink
    included). A symlink loop or another OS problem is a :class:`MaskFileError`."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MaskFileError(
                path, "is a symlink loop (following its links never ends)"
            ) from None
        if e.errno == errno.ENOTDIR:
            return None
        raise MaskFileError(path, f"cannot access ({os_problem(e)})") from None


def input_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, when it is a readable regular file or folder (symlinks followed).

    Raises
    ------
    MaskFileError
        ``no such file or directory``; ``is a broken symlink``; ``is a symlink loop``; ``is a
        FIFO (named pipe) ...`` (or another special file: reading it could block or never end);
        ``cannot access (Permission denied)``.
    """
    if not isinstance(path, str | os.PathLike):
        from .errors import MaskValidationError

        raise MaskValidationError(f"a path is a str or os.PathLike, not a {type(path).__name__}")
    p = Path(os.fspath(path))
    st = _stat(p)
    if st is None:
        if p.is_symlink():
            raise MaskFileError(
                p, f"is a broken symlink (its target {os.readlink(p)!r} is missing)"
            )
        raise MaskFileError(p, "no such file or directory")
    kind = stat.S_IFMT(st.st_mode)
    if kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise MaskFileError(
            p,
            f"is {_KINDS.get(kind, 'not a regular file')}, not a file masktopo can read (reading "
            "it could block or never end); give a mask file or a run directory",
        )
    return p


def _target(path: Path) -> tuple[Path, os.stat_result | None]:
    """Where a write to ``path`` goes (a symlink's target) and what is there now."""
    st = _stat(path)
    if path.is_symlink():
        return Path(os.path.realpath(path)), st
    return path, st


#: The temporary files :func:`atomic_write` writes beside their destination,
#: ``.<name>.<12 hex digits>.tmp``.
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def remove_temporary_files(folder: str | os.PathLike) -> int:
    """Delete the temporary files (:data:`TEMPORARY_NAME`) an :func:`atomic_write` in ``folder``
    left when its process was killed; returns how many. Only for a folder this process writes
    alone (a run directory under its lock): another writer's file in flight would go too."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for entry in it:
            if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _no_folder(directory: Path) -> str:
    """Why a file cannot be written into ``directory``, which is not a folder."""
    if directory.exists():
        return f"cannot write: {str(directory)!r} is a file, not a folder"
    return f"cannot write: the folder {str(directory)!r} does not exist"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through ``write(fileobj)``, atomically (module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The destination. Its folder must exist. A symlink is followed (its target is replaced);
        a character device or FIFO is written directly.
    write : callable
        Called once with a binary file object opened for writing.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MaskFileError
        When the folder does not exist, the destination is a folder, block device or socket, or
        the write fails (``cannot write (No space left on device)``); the old file is untouched.
    """
    path = Path(os.fspath(path))
    target, st = _target(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = stat.S_IFMT(st.st_mode)
        if kind in (stat.S_IFCHR, stat.S_IFIFO):
            try:
                with open(target, "wb") as f:
                    write(f)
            except OSError as e:
                raise MaskFileError(path, f"cannot write ({os_problem(e)})") from None
            return path
        raise MaskFileError(path, f"cannot write: it is {_KINDS.get(kind, 'not a regular file')}")
    directory = target.parent
    if not directory.is_dir():
        raise MaskFileError(path, _no_folder(directory))
    tmp: Path | None = None
    try:
        for _ in range(100):
            tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            try:
                fd = os.open(tmp, flags, 0o666)
                break
            except FileExistsError:
                tmp = None
        else:  # pragma: no cover - 100 random 48-bit names all taken
            raise FileExistsError("no free temporary file name")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise MaskFileError(path, f"cannot write ({os_problem(e)})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_folder(directory)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write` of ``obj`` as indented JSON (NaN written as ``NaN``) and a newline."""
    text = json.dumps(obj, indent=1, allow_nan=True) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def fsync_folder(directory: Path) -> None:
    """Make a rename in ``directory`` durable; not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writable_file(path: str | os.PathLike, what: str = "the output") -> Path:
    """``path`` as a Path, when a file can be written there: its folder exists and is writable,
    and it is not a folder (a symlink counts as its target)."""
    p = Path(os.fspath(path))
    target, st = _target(p)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise MaskFileError(p, f"cannot write {what}: it is a folder")
    parent = target.parent
    if not parent.is_dir():
        raise MaskFileError(p, _no_folder(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MaskFileError(p, f"cannot write: the folder {str(parent)!r} is not writable")
    return p


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same existing file or folder."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output that is (after following symlinks) one of the ``inputs``."""
    out = Path(os.fspath(out))
    for src in inputs:
        if same_file(out, Path(os.fspath(src))):
            raise MaskFileError(
                out, "is also an input of this command; writing it would replace what is read"
            )


def existing_ancestor(path: Path) -> Path:
    """The nearest folder of ``path`` (itself included) that exists."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_folder(out: Path, what: str = "files") -> Path:
    """Fail (one line) unless ``out`` is a writable folder or can be created; returns the
    nearest existing folder."""
    if out.exists() and not out.is_dir():
        raise MaskFileError(out, f"cannot write {what} there: it is a file, not a folder")
    base = existing_ancestor(out)
    if not base.is_dir():
        raise MaskFileError(out, f"cannot create the folder: {str(base)!r} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise MaskFileError(out, f"cannot write: the folder {str(base)!r} is not writable")
    return base


class Staging:
    """A hidden temporary folder next to ``out``; :meth:`commit` moves its files into ``out``.

    Used as a context manager: leaving it without :meth:`commit` (an error) removes the staging
    folder and everything written so far, so ``out`` is not touched.

    Parameters
    ----------
    out : path
        The destination folder (created on commit when missing).
    what : str
        What is written, for messages (``"figures"``).
    """

    def __init__(self, out: str | os.PathLike, what: str = "files"):
        self.out = Path(os.fspath(out))
        base = writable_folder(self.out, what)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=".masktopo-staging-", dir=base))
        except OSError as e:
            raise MaskFileError(self.out, f"cannot write ({os_problem(e)})") from None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, files: list[Path]) -> list[Path]:
        """Move ``files`` (inside the staging folder) into ``out``; their new paths."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            moved = []
            for f in files:
                dest = self.out / f.relative_to(self.path)
                os.replace(f, dest)
                moved.append(dest)
        except OSError as e:
            raise MaskFileError(self.out, f"cannot write ({os_problem(e)})") from None
        return moved
