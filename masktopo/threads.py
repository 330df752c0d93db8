"""How many CPU threads masktopo's compiled work uses: one number for the analysis and PAGS.

The compiled kernels (:mod:`masktopo.analysis._kernels`) run without the GIL, so the analysis
(:func:`masktopo.analysis.spectral.solve_many`, the layer rows, the run analysis's events) and
the PAGS loop (:mod:`masktopo.pags.pipeline`) spread their work over threads of one process.
:func:`default_threads` says how many: ``$MASKTOPO_WORKERS`` when set (the user's number, used
as given), else the cores this process may run on (``os.sched_getaffinity``, and no more than a
cgroup v2 CPU quota allows: a container limited to 2 CPUs on a 64-core host gets 2), shared
among the processes that ``torchrun`` started on this machine (``$LOCAL_WORLD_SIZE``), and at
most :data:`MAX_THREADS`. :func:`one_blas_thread` keeps BLAS to one thread while any thread of
the process computes inside it, so that no number depends on how many threads BLAS used.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from pathlib import Path
from typing import ClassVar

from .errors import MaskValidationError

__all__ = ["CPU_MAX", "MAX_THREADS", "default_threads", "one_blas_thread", "usable_cores"]

#: The most threads :func:`default_threads` gives without ``$MASKTOPO_WORKERS``: the PAGS loop's
#: own thread selects and writes every chunk alone (a few ms a candidate), so more workers would
#: wait for it, and the analysis's parts become too small to balance.
MAX_THREADS = 8

#: cgroup v2's CPU quota of this process's group (``"max 100000"`` or ``"200000 100000"``).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _quota() -> int | None:
    """The CPUs a cgroup v2 quota allows (rounded up), or None without a quota."""
    try:
        quota, period = CPU_MAX.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or a file not in that format
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (all cores where the platform has
    none), capped by a cgroup v2 CPU quota (:data:`CPU_MAX`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    quota = _quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _env_threads() -> int | None:
    """``$MASKTOPO_WORKERS`` as a number ≥ 1, None when unset or empty."""
    env = os.environ.get("MASKTOPO_WORKERS", "").strip()
    if not env:
        return None
    try:
        return max(1, int(env))
    except ValueError:
        raise MaskValidationError(f"MASKTOPO_WORKERS={env!r} is not an integer") from None


def default_threads() -> int:
    """Threads in all (the caller's included) for the compiled CPU work.

    ``$MASKTOPO_WORKERS`` when set (at least 1; an error when it is not an integer), else
    :func:`usable_cores` divided among the ``$LOCAL_WORLD_SIZE`` processes of a ``torchrun``
    launch on this machine, at least 1 and at most :data:`MAX_THREADS`. Read on every call, so a
    change of the variable takes effect at once.
    """
    env = _env_threads()
    if env is not None:
        return env
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:  # not torchrun's number
        local = 1
    return max(1, min(MAX_THREADS, usable_cores() // local))


_BLAS = threading.local()  # .depth: this thread's nesting in one_blas_thread
_BLAS_LOCK = threading.Lock()


class _Held:
    """The process's BLAS limit while any thread is inside :func:`one_blas_thread`."""

    count = 0  # threads inside (their outermost entries)
    limiters: ClassVar[list] = []  # threadpoolctl limiters to restore, last first
    scipy = False  # whether SciPy's OpenBLAS was loaded when the limit was last extended


def _limit_blas() -> None:
    """Limit every BLAS library loaded now to one thread (under ``_BLAS_LOCK``)."""
    import threadpoolctl

    _Held.scipy = "scipy.linalg" in sys.modules
    _Held.limiters.append(threadpoolctl.ThreadpoolController().limit(limits=1, user_api="blas"))


@contextlib.contextmanager
def one_blas_thread(scipy_linalg: bool = False):
    """BLAS limited to one thread while any thread of the process is inside; cheaply nestable.

    Some BLAS and LAPACK results depend on how many threads computed them, in the last bit
    (OpenBLAS splits a ``4096 × 400`` by ``400 × 16`` product differently on two threads;
    ``syevd`` too), so every CPU spectrum is computed inside this, and its numbers are the same
    whatever the process's thread settings: one process or ``torchrun``, any
    ``$OMP_NUM_THREADS``.

    OpenBLAS's thread count is one setting for the whole process: the first thread to enter
    sets it to 1 for every BLAS library loaded (``threadpoolctl``), the last one to leave,
    whichever it is, restores it. SciPy's own OpenBLAS is loaded with ``scipy.linalg``, which
    is imported here only when asked (``scipy_linalg=True``; PAGS never needs it): code that
    will call it asks at its outermost entry, so that the library is loaded and limited by the
    same thread. A library loaded inside is limited at the next entry, nested or not, but that
    limit is not always obeyed: SciPy's OpenBLAS 0.3.30 ignored one set from a thread other
    than the one that had loaded it (its results then came from two threads, in one run of
    eight). OpenMP's limit is per thread: the first thread to enter limits its own and
    restores it when it leaves.
    """
    if scipy_linalg:
        import scipy.linalg  # noqa: F401  (loads its OpenBLAS, to be limited)
    depth = getattr(_BLAS, "depth", 0)
    omp = None
    if not depth or (not _Held.scipy and "scipy.linalg" in sys.modules):
        with _BLAS_LOCK:
            if not depth:
                if not _Held.count:
                    import threadpoolctl

                    _limit_blas()
                    omp = threadpoolctl.ThreadpoolController().limit(limits=1, user_api="openmp")
                _Held.count += 1
            if not _Held.scipy and "scipy.linalg" in sys.modules:
                _limit_blas()
    _BLAS.depth = depth + 1
    try:
        yield
    finally:
        _BLAS.depth = depth
        if not depth:
            if omp is not None:
                omp.restore_original_limits()
            with _BLAS_LOCK:
                _Held.count -= 1
                if not _Held.count:
                    while _Held.limiters:
                        _Held.limiters.pop().restore_original_limits()
                    _Held.scipy = False
