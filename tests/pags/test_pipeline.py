"""pipeline.Tasks: the PAGS loop's work shared by the caller and one worker thread."""

import threading

import pytest

from masktopo.analysis import spectral
from masktopo.pags.pipeline import Tasks


def test_results_in_order_with_or_without_a_worker():
    for threads in (1, 2):
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
        seen.append((spectral.use_workers(10**9), spectral._BLAS.depth))

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
