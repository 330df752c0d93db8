"""Work shared by the PAGS loop's thread and its worker threads.

The PAGS loop's work per candidate (drawing it, the ranking pass, the exact pass of the layers
that can still be accepted) reads the selection only through *which* layers are computed
exactly, so the candidates of the next chunks are drawn and ranked while the current chunk is
selected and written (:mod:`masktopo.pags.engine`). :class:`Tasks` queues such work for its
worker threads; a caller that needs results runs every task not started yet itself (work
sharing without a second queue: ``Future.cancel`` succeeds only for a task nobody started), so
every thread stays busy whichever of them the machine slows down, and a result never depends
on which thread computed it (each task is the same code either way). The compiled kernels run
without the GIL (:mod:`masktopo.analysis._kernels`).

Tasks run inside :func:`masktopo.analysis.spectral.alone` (their solves hand nothing to the
analysis's own worker thread) and :func:`~masktopo.analysis.spectral.
one_blas_thread`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..analysis.spectral import alone
from ..threads import one_blas_thread


def _run(fn: Callable, args: tuple) -> Any:
    with alone(), one_blas_thread():
        return fn(*args)


class Tasks:
    """Tasks run by worker threads and by the caller of :meth:`results`.

    Parameters
    ----------
    threads : int
        Threads in all: ``threads − 1`` workers besides the caller; 1: no worker, every task
        runs in the caller when its result is asked for (in the order asked).
    """

    def __init__(self, threads: int = 2):
        self.threads = max(1, int(threads))
        self._pool = None
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="masktopo-pags")
        self._work: dict[Future, tuple[Callable, tuple]] = {}

    def submit(self, fn: Callable, *args) -> Future:
        """Queue ``fn(*args)``; a worker starts it when one is free (in the order queued)."""
        if self._pool is None:
            future: Future = Future()  # never started: results() runs it
        else:
            future = self._pool.submit(_run, fn, args)
        self._work[future] = (fn, args)
        return future

    def results(self, futures: Sequence[Future]) -> list:
        """The results of ``futures``, in order: this thread runs each one no worker has
        started (in order), then waits for the others. A task's exception is raised here."""
        mine: dict[int, Any] = {}
        try:
            for i, future in enumerate(futures):
                if future.cancel():  # nobody started it: run it here
                    mine[i] = _run(*self._work[future])
            return [mine[i] if i in mine else future.result() for i, future in enumerate(futures)]
        finally:
            for future in futures:
                self._work.pop(future, None)

    def close(self) -> None:
        """Drop the tasks not started and wait for the workers' current ones."""
        for future in list(self._work):
            future.cancel()
        self._work.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Tasks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
