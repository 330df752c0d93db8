"""The spectral engine: every route against a dense LAPACK SVD, ties, deflation, parallel path."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from masktopo.analysis import _engine, _kernels, spectral
from masktopo.analysis._engine import Parts, solve_top2
from masktopo.errors import MaskValidationError, UnknownNameError


def _ref(M) -> np.ndarray:
    A = M.toarray() if sp.issparse(M) else np.asarray(M, dtype=float)
    s = np.linalg.svd(A, compute_uv=False)
    return np.concatenate([s, [0.0, 0.0]])[:2]


def _close(got, want, rtol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    assert np.all(np.abs(got - want) <= rtol * max(float(want[0]), 1e-300)), (got, want)


def _connected_random(m, n, density, seed, binary):
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=density, format="lil", random_state=rng)
    for i in range(m):  # a path through all rows and columns keeps the graph connected
        A[i, (i * n) // m] = 1.0
        A[i, ((i + 1) * n) // m - 1] = 1.0
    A = A.tocsr()
    if binary:
        A.data[:] = 1.0
    return A


def _kernel(mats, small_side=_engine.DENSE_MAX_SIDE):
    """σ₁, σ₂ and Lanczos steps straight from the compiled kernel."""
    out, ok, steps = _kernels.top2_batch(*_kernels.pack([Parts.of(M) for M in mats]),
                                         _engine.TOL, _engine.MAX_STEPS, small_side)  # fmt: skip
    assert ok.all()
    return out, steps


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("transpose", [False, True])
def test_lanczos_matches_dense_svd(binary, transpose):
    mats = [
        _connected_random(120, 400, 0.02, 0, binary),
        _connected_random(200, 200, 0.05, 1, binary),
        _connected_random(130, 2000, 0.01, 2, binary),
        sp.random(150, 600, density=0.004, random_state=3, format="csr"),  # many components
    ]
    if transpose:  # the Gram operator on the column side
        mats = [M.T.tocsr() for M in mats]
    got, steps = _kernel(mats)
    assert (steps[:3] > 0).all()  # the connected ones went through Lanczos
    for M, g in zip(mats, got, strict=True):
        _close(g, _ref(M))


def test_dense_route_matches_lanczos_route():
    mats = [_connected_random(60, 90, 0.08, s, s % 2 == 0) for s in range(4)]
    dense, steps_d = _kernel(mats, small_side=100)
    lanczos, steps_l = _kernel(mats, small_side=0)
    assert (steps_d == 0).all() and (steps_l > 0).all()
    for M, a, b in zip(mats, dense, lanczos, strict=True):
        _close(a, _ref(M))
        _close(b, _ref(M))


def test_result_does_not_depend_on_the_batch():
    mats = [Parts.of(_connected_random(150, 500, 0.02, s, False)) for s in range(3)]
    together = solve_top2(mats)
    assert np.array_equal(together, solve_top2(mats))
    for M, row in zip(mats, together, strict=True):
        assert np.array_equal(solve_top2([M])[0], row)  # bit for bit, alone or batched
    assert np.array_equal(solve_top2(mats[::-1])[::-1], together)


def test_tied_top_singular_values_across_components_are_found():
    # Single-vector Lanczos sees sigma_1 once; solving each component alone finds both copies.
    K = sp.csr_matrix(np.ones((100, 200)))
    two = sp.block_diag([K, K]).tocsr()
    got = solve_top2([two])[0]
    _close(got, [np.sqrt(100 * 200)] * 2)
    # Normalized matrix of a disconnected graph: sigma_1 = sigma_2 = 1.
    a = _connected_random(110, 300, 0.03, 4, True)
    b = _connected_random(120, 250, 0.03, 5, True)
    D = sp.block_diag([a, b]).tocsc()
    D = D[:, np.flatnonzero(np.diff(D.indptr))].tocsr()  # drop isolated columns
    r = np.asarray(D.sum(1)).ravel()
    c = np.asarray(D.sum(0)).ravel()
    N = sp.diags(1 / np.sqrt(r)) @ D @ sp.diags(1 / np.sqrt(c))
    _close(solve_top2([N])[0], [1.0, 1.0])
    # Many equal stars (every column its own component): sigma_1 = sigma_2 = sqrt(3).
    stars = sp.block_diag([np.ones((3, 1))] * 60).tocsr()
    _close(_kernel([stars], small_side=0)[0][0], [np.sqrt(3)] * 2)


@pytest.mark.parametrize("small_side", [0, 100])
def test_rank_one_and_complete_bipartite_exact_sigma2(small_side):
    star = sp.csr_matrix(np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]))
    _close(solve_top2([star])[0], [5.0, 0.0])
    for a, b in ((7, 9), (40, 70)):
        s = _kernel([np.ones((a, b))], small_side=small_side)[0][0]
        # Rayleigh–Ritz step: sigma_2 = 0 to about eps * sigma_1, not sqrt(eps) * sigma_1.
        assert abs(s[0] - np.sqrt(a * b)) < 1e-12 * s[0] and abs(s[1]) < 1e-13 * s[0]
    # Biregular: sigma_1 = sqrt(d_row * d_col) exactly; a circulant-like pattern (rows of
    # degree 4 over 2x as many columns of degree 2).
    n = 64
    C = np.zeros((n, 2 * n))
    for i in range(n):
        for j in (0, 1, 2, 7):  # two even and two odd offsets: every column has degree 2
            C[i, (2 * i + j) % (2 * n)] = 1.0
    got = _kernel([C], small_side=small_side)[0][0]
    _close(got, _ref(C))
    assert abs(got[0] - np.sqrt(4 * 2)) < 1e-12


def test_solve_many_and_top_singular_values_agree_on_every_method():
    rng = np.random.default_rng(7)
    B = (rng.random((60, 300)) < 0.05).astype(float) * rng.random((60, 300))
    want = _ref(B)
    for method in ("auto", "dense", "gram", "sparse"):
        _close(spectral.top_singular_values(torch.from_numpy(B), method=method).numpy(), want)
    _close(spectral.solve_many([sp.csr_matrix(B)])[0], want)
    batch = torch.from_numpy(np.stack([B, 2 * B]))
    got = spectral.top_singular_values(batch).numpy()
    _close(got[1], 2 * want)
    with pytest.raises(UnknownNameError):
        spectral.top_singular_values(torch.from_numpy(B), method="eig")


@pytest.mark.parametrize("workers", ["2", "3", "4"])
def test_parallel_split_matches_serial(monkeypatch, workers):
    mats = [_connected_random(100 + 10 * i, 600, 0.02, i, i % 2 == 0) for i in range(8)]
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    serial = spectral.solve_many(mats)
    monkeypatch.setenv("MASKTOPO_WORKERS", workers)
    monkeypatch.setattr(spectral, "_PARALLEL_MIN_NNZ", 0)
    parallel = spectral.solve_many(mats)
    for M, a, b in zip(mats, serial, parallel, strict=True):
        _close(a, _ref(M))
        _close(b, a)


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_split_parts_covers_every_item_once_and_balances(parts):
    rng = np.random.default_rng(parts)
    costs = rng.integers(1, 1000, size=40)
    split = spectral.split_parts(costs, parts, 0.5)
    assert len(split) == parts
    assert sorted(i for q in split for i in q) == list(range(40))
    loads = np.array([costs[q].sum() + len(q) for q in split], dtype=float)
    if parts > 1:  # the caller's share 1/p, the workers' equal: within one item of it
        assert np.ptp(loads) <= costs.max() + 1
    assert spectral.split_parts(costs, parts, 0.5) == split  # deterministic


def test_split_parts_gives_the_caller_its_share():
    costs = np.ones(1000)
    mine, *workers = spectral.split_parts(costs, 4, 0.6)  # caller 2 * 0.4 / 4 = 20 %
    assert abs(len(mine) - 200) <= 1
    assert all(abs(len(q) - 800 / 3) <= 1 for q in workers)
    assert abs(len(spectral.split_parts(costs, 2, 0.6)[1]) - 600) <= 1  # two: the worker's share


def test_in_threads_uses_the_workers_and_keeps_the_parts(monkeypatch):
    import threading

    monkeypatch.setenv("MASKTOPO_WORKERS", "3")
    who = {}
    both = threading.Barrier(2, timeout=10)  # the two workers' parts run at the same time

    def solve(part):
        who[tuple(part)] = threading.get_ident()
        if threading.get_ident() != main:
            both.wait()
        return [i * i for i in part]

    main = threading.get_ident()

    done = spectral.in_threads(np.arange(1, 31), solve)
    assert len(done) == 3 and who[tuple(done[0][0])] == threading.get_ident()
    assert len(set(who.values())) == 3  # the caller and two workers
    got = {i: v for part, vals in done for i, v in zip(part, vals, strict=True)}
    assert got == {i: i * i for i in range(30)}
    both = threading.Barrier(1)  # one worker part now
    assert len(spectral.in_threads([5, 7], solve)) == 2  # no more parts than items


def test_in_threads_raises_the_callers_and_the_workers_errors(monkeypatch):
    monkeypatch.setenv("MASKTOPO_WORKERS", "2")

    def solve(part):
        if 0 in part:
            raise ValueError("item 0")
        return part

    with pytest.raises(ValueError, match="item 0"):
        spectral.in_threads([10, 1, 1, 1], solve)  # item 0 (largest) is the caller's
    with pytest.raises(ValueError, match="item 0"):
        spectral.in_threads([10, 1, 1, 1], solve, remote_share=0.99)  # now the worker's


def test_bad_worker_count(monkeypatch):
    monkeypatch.setenv("MASKTOPO_WORKERS", "two")
    with pytest.raises(MaskValidationError, match="MASKTOPO_WORKERS"):
        spectral.cpu_workers()


def test_engine_imports_no_torch():
    import subprocess
    import sys

    # masktopo.analysis/__init__ imports torch; load the engine's file alone to check it.
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('e', {_engine.__file__!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lanczos_may_need_more_steps_than_the_dimension():
    # Two dense columns over a 35-dim side: sigma_1^2 dwarfs the sigma_2 - sigma_3 gap, so the
    # second pair converges only after more than 35 steps (without full reorthogonalization the
    # Krylov space is not exhausted at step 35; stopping there gave sigma_2 wrong by 1e-5).
    rng = np.random.default_rng(0)
    M = (rng.random((39, 35)) < 0.45).astype(float)
    M[:, rng.random(35) < 0.4] = 1.0
    (got,), _ = _kernel([M], small_side=0)
    _close(got, _ref(M))


@pytest.mark.parametrize("seed", range(12))
def test_lanczos_route_on_small_awkward_matrices(seed):
    """Every small structure through the Lanczos route (the default sends them to dense eigh)."""
    rng = np.random.default_rng(100 + seed)
    m, n = (int(x) for x in rng.integers(2, 60, size=2))
    M = (rng.random((m, n)) < rng.uniform(0.03, 0.9)).astype(float)
    if seed % 3 == 1:  # two diagonal blocks: a disconnected graph
        M[: m // 2, n // 2 :] = 0
        M[m // 2 :, : n // 2] = 0
    if seed % 3 == 2:  # dense columns
        M[:, rng.random(n) < 0.3] = 1.0
    if seed % 2:
        M *= rng.random((m, n))  # weighted
    if not M.any():
        M[0, 0] = 1.0
    (got,), _ = _kernel([M], small_side=0)
    _close(got, _ref(M))


def test_clustered_spectrum_long_lanczos_run():
    # sigma_2 at the top of a tight cluster: the run needs more vectors than the first basis
    # allocation (64) and ends with an exhausted Krylov space; partial reorthogonalization must
    # keep it exact all the way.
    rng = np.random.default_rng(0)
    m, n = 300, 400
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    s = 5 - 1e-2 * np.arange(m) ** 2 / m
    s[0] = 10
    M = (U * s) @ V.T
    (got,), steps = _kernel([M])
    assert steps[0] > 128
    _close(got, _ref(M))
