"""pipeline.Tasks: the PAGS loop's work shared by the caller and its worker threads."""

import threading

import pytest

from masktopo import threads as mt_threads
from masktopo.analysis import spectral
from masktopo.pags.pipeline import Tasks


def test_results_in_order_with_or_without_workers():
    for threads in (1, 2, 3):
        with Tasks(threads) as tasks:
            futures = [tasks.submit(pow, i, 2) for i in range(20)]
            assert tasks.results(futures) == [i * i for i in range(20)]


def test_one_thread_runs_every_task_in_the_caller_when_asked():
    ran = []
    with Tasks(1) as tasks:
        futures = [tasks.submit(lambda i: ran.append((i, threading.get_ident())), i)
                   for i in range(3)]  # fmt: skip
        assert ran == []  # nothing runs before its result is asked for
        tasks.results(futures[1:])
        assert [i for i, _ in ran] == [1, 2]
        assert {who for _, who in ran} == {threading.get_ident()}


def test_the_caller_runs_what_the_busy_worker_has_not_started():
    gate, started = threading.Event(), threading.Event()
    who = {}

    def block():
        started.set()
        assert gate.wait(10)
        return "blocked"

    def note(i):
        who[i] = threading.get_ident()
        return i

    with Tasks(2) as tasks:
        first = tasks.submit(block)
        assert started.wait(10)  # the worker is busy with it
        rest = [tasks.submit(note, i) for i in range(5)]
        assert tasks.results(rest) == list(range(5))  # did not wait for the worker
        assert set(who.values()) == {threading.get_ident()}
        gate.set()
        assert tasks.results([first]) == ["blocked"]


def test_tasks_run_alone_with_one_blas_thread():
    seen = []

    def probe():
        seen.append((spectral.use_workers(10**9), mt_threads._BLAS.depth))

    with Tasks(2) as tasks:
        tasks.results([tasks.submit(probe) for _ in range(4)])
    assert seen == [(False, 1)] * 4  # no nested worker, inside one_blas_thread


@pytest.mark.parametrize("threads", [1, 2])
def test_an_exception_reaches_the_caller_and_close_drops_the_rest(threads):
    ran = []

    def fail():
        raise ValueError("candidate 7 is bad")

    tasks = Tasks(threads)
    bad = tasks.submit(fail)
    with pytest.raises(ValueError, match="candidate 7"):
        tasks.results([bad])
    later = [tasks.submit(ran.append, i) for i in range(50)]
    tasks.close()
    assert all(f.cancelled() or f.done() for f in later)
    assert len(ran) < 50 or threads == 2  # one thread: nothing ran
    if threads == 1:
        assert ran == []


def test_threads_minus_one_workers_run_at_once():
    """Three threads: two workers start two tasks before either may finish."""
    gate = threading.Event()
    started = [threading.Event(), threading.Event()]
    who = {}

    def block(i):
        who[i] = threading.get_ident()
        started[i].set()
        assert gate.wait(10)
        return i

    with Tasks(3) as tasks:
        futures = [tasks.submit(block, i) for i in range(2)]
        assert started[0].wait(10) and started[1].wait(10)  # both running: two workers
        gate.set()
        assert tasks.results(futures) == [0, 1]
    assert len(set(who.values())) == 2 and threading.get_ident() not in who.values()


@pytest.mark.parametrize(
    ("threads", "chunk", "ahead"),
    [(1, 6, 0), (2, 32, 2), (2, 6, 2), (4, 6, 3), (8, 4, 14), (8, 32, 2)],
)
def test_chunks_ahead_keep_two_tasks_queued_per_worker(threads, chunk, ahead):
    from masktopo.pags.config import PagsConfig
    from masktopo.pags.engine import _Ahead, _Comm

    with Tasks(threads) as tasks:
        a = _Ahead(tasks, None, None, PagsConfig(chunk=chunk), _Comm(), concurrent=True)
        assert a.ahead == ahead
        assert _Ahead(tasks, None, None, PagsConfig(chunk=chunk), _Comm(), False).ahead == 0
