"""masktopo.threads: how many threads the analysis and PAGS use on the CPU."""

import os
from typing import ClassVar

import pytest

from masktopo import threads
from masktopo.analysis import spectral
from masktopo.errors import MaskValidationError


@pytest.mark.parametrize(
    ("env", "cores", "local", "expected"),
    [
        ("5", 2, None, 5),  # the user's number, whatever the cores
        ("", 2, None, 2),
        ("", 1, None, 1),
        ("", 16, None, threads.MAX_THREADS),
        ("", 16, "4", 4),  # torchrun: 4 processes on this machine share its cores
        ("", 2, "4", 1),
        ("", 6, "bad", 6),  # not torchrun's number: ignored
    ],
)
def test_default_threads(monkeypatch, tmp_path, env, cores, local, expected):
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "absent")
    monkeypatch.setenv("MASKTOPO_WORKERS", env)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert threads.default_threads() == expected


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 8), ("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1),
     ("garbage", 8), ("", 8)],
)  # fmt: skip
def test_default_threads_follow_a_cgroup_quota(monkeypatch, tmp_path, cpu_max, expected):
    """A container's CPU quota (cgroup v2 ``cpu.max``) caps the threads, rounded up."""
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.delenv("MASKTOPO_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert threads.default_threads() == expected


def test_default_threads_rejects_a_bad_variable(monkeypatch):
    monkeypatch.setenv("MASKTOPO_WORKERS", "many")
    with pytest.raises(MaskValidationError, match="MASKTOPO_WORKERS='many' is not an integer"):
        threads.default_threads()


def test_the_analysis_uses_the_same_number(monkeypatch, tmp_path):
    """``cpu_workers`` (the analysis's threads) follows the same rule as the PAGS loop: more than
    two on a bigger machine (it was min(2, cores))."""
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "absent")
    monkeypatch.delenv("MASKTOPO_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert spectral.cpu_workers() == threads.default_threads() == 6
    monkeypatch.setenv("MASKTOPO_WORKERS", "3")
    assert spectral.cpu_workers() == 3


def test_usable_cores_without_affinity(monkeypatch, tmp_path):
    (tmp_path / "cpu.max").write_text("300000 100000")
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert threads.usable_cores() == 3


class _FakeController:
    """Stands in for ``threadpoolctl.ThreadpoolController``: records each limit set and each
    restore, with the thread that did it."""

    log: ClassVar[list] = []

    def limit(self, *, limits, user_api):
        import threading

        me = threading.get_ident()
        _FakeController.log.append(("set", user_api, me))
        return _FakeLimiter(user_api)


class _FakeLimiter:
    def __init__(self, api):
        self.api = api

    def restore_original_limits(self):
        import threading

        _FakeController.log.append(("restore", self.api, threading.get_ident()))


@pytest.fixture
def fake_blas(monkeypatch):
    import threadpoolctl

    _FakeController.log = []
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", _FakeController)
    return _FakeController.log


def test_one_blas_thread_holds_until_the_last_thread_leaves(fake_blas):
    """The BLAS limit is the process's: set by the first thread in, restored by the last one
    out, even when that is another thread (before, the first thread's exit restored it while
    a worker was still computing: its numbers then depended on timing). OpenMP's limit is per
    thread: the first thread's, restored by it. Nested entries set nothing."""
    import threading

    me = threading.get_ident()
    inside, leave = threading.Event(), threading.Event()

    def worker():
        with threads.one_blas_thread():
            inside.set()
            leave.wait(10)

    with threads.one_blas_thread():
        with threads.one_blas_thread():
            pass
        assert fake_blas == [("set", "blas", me), ("set", "openmp", me)]
        t = threading.Thread(target=worker)
        t.start()
        assert inside.wait(10)
    assert fake_blas[2:] == [("restore", "openmp", me)]  # BLAS still held for the worker
    leave.set()
    t.join(10)
    assert fake_blas[3:] == [("restore", "blas", t.ident)]  # restored by the last one out
    with threads.one_blas_thread():  # and set again by the next one in
        pass
    assert [e[:2] for e in fake_blas[4:]] == [("set", "blas"), ("set", "openmp"),
                                             ("restore", "openmp"), ("restore", "blas")]  # fmt: skip


def test_one_blas_thread_limits_scipy_loaded_inside(fake_blas, monkeypatch):
    """SciPy's OpenBLAS is a second library, loaded with ``scipy.linalg``: an entry after it
    was loaded (nested or not) limits it too, and both limits are restored, last first."""
    import sys

    import scipy.linalg

    monkeypatch.delitem(sys.modules, "scipy.linalg")
    with threads.one_blas_thread():
        n = len(fake_blas)
        with threads.one_blas_thread():  # scipy.linalg still not loaded: nothing more
            pass
        assert len(fake_blas) == n
        monkeypatch.setitem(sys.modules, "scipy.linalg", scipy.linalg)
        with threads.one_blas_thread():
            assert fake_blas[n:] == [("set", "blas", fake_blas[0][2])]
        with threads.one_blas_thread():  # once only
            pass
        assert len(fake_blas) == n + 1
    restores = [e[1] for e in fake_blas if e[0] == "restore"]
    assert restores == ["openmp", "blas", "blas"]
    monkeypatch.delitem(sys.modules, "scipy.linalg")
    n = len(fake_blas)
    with threads.one_blas_thread(scipy_linalg=True):  # imported first: one limit covers it
        pass
    assert [e[:2] for e in fake_blas[n:]] == [("set", "blas"), ("set", "openmp"),
                                             ("restore", "openmp"), ("restore", "blas")]  # fmt: skip
    assert "scipy.linalg" in sys.modules


def test_spectra_do_not_depend_on_the_blas_threads():
    """The dense route's σ and the IMDB groups' batched route are the same bits whatever
    BLAS's thread setting outside (OpenBLAS rounds some products differently on two threads:
    this test failed before the routes held :func:`masktopo.threads.one_blas_thread`)."""
    import numpy as np
    import threadpoolctl

    from masktopo.analysis._dense import top2_block, top2_dense
    from masktopo.analysis._engine import TOL, Parts
    from masktopo.analysis._kernels import pack

    rng = np.random.default_rng(1)
    A = rng.standard_normal((512, 1024)) * (rng.random((512, 1024)) < 0.5)
    groups = [A[:, i : i + 300] for i in range(0, 1024, 300)]
    block = pack([Parts.of(g) for g in groups])
    got = []
    for n in (1, 2, 1):
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            sv, ok, _ = top2_dense(A, TOL)
            got.append((sv.tobytes(), top2_block(*block[:6]).tobytes()))
        assert ok
    assert got[0] == got[1] == got[2]


def test_one_blas_thread_limits_the_real_libraries():
    """With the real ``threadpoolctl``: one BLAS thread inside (nested too), the setting
    restored after."""
    import numpy as np  # noqa: F401  (its OpenBLAS)
    import threadpoolctl

    def blas_threads() -> int:
        return max(i["num_threads"] for i in threadpoolctl.threadpool_info()
                   if i["user_api"] == "blas")  # fmt: skip

    if not any(i["user_api"] == "blas" for i in threadpoolctl.threadpool_info()):
        pytest.skip("no BLAS library to limit")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        with threads.one_blas_thread(scipy_linalg=True):
            with threads.one_blas_thread():
                assert blas_threads() == 1
            assert blas_threads() == 1
        assert blas_threads() == before


def test_scipy_linalg_is_loaded_and_limited_by_the_entering_thread():
    """In a fresh process: ``one_blas_thread(scipy_linalg=True)`` loads SciPy's OpenBLAS before
    it limits, so one limit, set by this thread, covers both libraries (SciPy's OpenBLAS 0.3.30
    ignored a limit set later from another thread)."""
    import subprocess
    import sys

    code = (
        "import sys, threadpoolctl, numpy\n"
        "from masktopo import threads\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "with threads.one_blas_thread(scipy_linalg=True):\n"
        "    n = [i['num_threads'] for i in threadpoolctl.threadpool_info()\n"
        "         if i['user_api'] == 'blas']\n"
        "    print(len(n), max(n), len(threads._Held.limiters))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, check=True)  # fmt: skip
    libs, most, limiters = map(int, out.stdout.split())
    assert most == 1 and limiters == 1 and libs >= 1


def test_the_analysis_asks_for_scipy_linalg_where_the_dense_route_may_run(monkeypatch):
    """The outermost entries of the layer rows pass ``scipy_linalg=True`` when a layer can take
    the dense route (a side of DENSE_ROUTE_MIN_SIDE or more), and not otherwise."""
    import torch

    from masktopo.analysis import metrics

    asked = []
    real = metrics.one_blas_thread

    def spy(scipy_linalg=False):
        asked.append(scipy_linalg)
        return real(scipy_linalg=scipy_linalg)

    monkeypatch.setattr(metrics, "one_blas_thread", spy)
    small = torch.rand(30, 40) < 0.5
    metrics.layer_metric_rows([("a", small, None)], metrics="mu0")
    assert asked and not any(asked)
    asked.clear()
    big = torch.zeros(1024, 1100, dtype=torch.bool)
    big[:, :3] = True
    metrics.layer_metric_rows([("a", small, None), ("b", big, None)], metrics="mu0")
    assert asked and all(asked)
