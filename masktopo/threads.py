"""How many CPU threads masktopo's compiled work uses: one number for the analysis and PAGS.

The compiled kernels (:mod:`masktopo.analysis._kernels`) run without the GIL, so the analysis
(:func:`masktopo.analysis.spectral.solve_many`, the layer rows, the run analysis's events) and
the PAGS loop (:mod:`masktopo.pags.pipeline`) spread their work over threads of one process.
:func:`default_threads` says how many: ``$MASKTOPO_WORKERS`` when set (the user's number, used
as given), else the cores this process may run on (``os.sched_getaffinity``, and no more than a
cgroup v2 CPU quota allows: a container limited to 2 CPUs on a 64-core host gets 2), shared
among the processes that ``torchrun`` started on this machine (``$LOCAL_WORLD_SIZE``), and at
most :data:`MAX_THREADS`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import MaskValidationError

__all__ = ["CPU_MAX", "MAX_THREADS", "default_threads", "usable_cores"]

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
