"""One writer per run directory: a lock file holding the writer's pid and host.

The lock is taken with ``fcntl.flock`` on ``RUN/.lock``, which the kernel releases when the
process ends however it ends (SIGKILL included), so a killed writer never leaves a lock that blocks
a ``--resume``; the pid and host written into the file name the holder in the message. Where
``flock`` does not exist (Windows), the file itself is the lock and a stale one is recognized by
its pid no longer running on this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from ..errors import MaskFileError
from ..files import os_problem, remove_temporary_files
from .layout import ANALYSIS_DIR, LOCK_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    except OSError:  # pragma: no cover
        return False
    return True


class RunLock:
    """The exclusive right to write the run directory ``run`` (a context manager).

    Parameters
    ----------
    run : path
        The run directory (must exist when :meth:`acquire` is called).

    Raises
    ------
    MaskFileError
        From :meth:`acquire`, when another live process writes the run:
        ``<run>: is being written by process 1234 on host (started ...); wait for it to end or
        stop it; two writers would interleave their events``.
    """

    def __init__(self, run: str | os.PathLike):
        self.run = Path(os.fspath(run))
        self.path = self.run / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise MaskFileError(
                self.path, f"cannot create the lock file ({os_problem(e)})"
            ) from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._busy(self._holder(fd)) from None
            else:  # pragma: no cover - no flock: the pid decides
                holder = self._holder(fd)
                if holder and holder.get("host") == me["host"] and holder.get("pid") != me["pid"]:
                    if _alive(int(holder.get("pid", -1))):
                        raise self._busy(holder)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._remove_leftovers()
        return self

    def _remove_leftovers(self) -> None:
        """Delete the temporary files of atomic writes that a killed writer of this run left (in
        the run directory and its folders; not ``analysis/``, which readers write without the
        lock): no live process can own them now that this one holds the lock."""
        remove_temporary_files(self.run)
        with contextlib.suppress(OSError), os.scandir(self.run) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False) and entry.name != ANALYSIS_DIR:
                    remove_temporary_files(entry.path)

    def _holder(self, fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            holder = json.loads(data.decode() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _busy(self, holder: dict) -> MaskFileError:
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
        return MaskFileError(
            self.run,
            f"is being written by another masktopo command ({who}); wait for it to end or stop "
            "it: two writers would interleave their events",
        )

    def release(self) -> None:
        """Give the lock up (the file stays; an unlocked file is not a lock)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
