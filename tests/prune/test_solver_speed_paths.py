"""The fast paths of CHITA's solvers (masktopo/prune/solvers.py) against the plain torch products:
the fused pass over row blocks, the syrk Gram matrix, the column gather, the Cholesky solve, the
IHT's updated gradient and the start point without a power iteration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import masktopo.prune.solvers as S
from masktopo.prune.solvers import Problem, SolverOptions, lipschitz, solve


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("rows", [1, 3, 7, 64, None])
def test_gram_step_is_both_products(rows):
    G = _rand(37, 23)
    v = _rand(23, seed=1)
    t, u = S._gram_step(G, v, rows)
    torch.testing.assert_close(t, G @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u, G.T @ (G @ v), rtol=1e-12, atol=1e-11)


def test_gram_step_on_a_column_major_matrix_and_float32():
    G = _rand(23, 37).T  # [37, 23], column-major: no fusion (its row blocks are strided)
    v = _rand(23, seed=1)
    t, u = S._gram_step(G, v, 4)
    torch.testing.assert_close(t, G @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u, G.T @ (G @ v), rtol=1e-12, atol=1e-11)
    G32, v32 = G.float().contiguous(), v.float()
    _, u = S._gram_step(G32, v32, 5)
    assert u.dtype == torch.float32
    torch.testing.assert_close(u, G32.T @ (G32 @ v32), rtol=1e-4, atol=1e-4)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def torch_threads(request):
    """torch's intra-op threads set to 1 (the syrk path) or 2 (the torch products)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("rows", [19, 600])
@pytest.mark.parametrize("layout", ["row", "column", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_is_a_times_a_transpose(layout, dtype, rows, torch_threads):
    A = _rand(rows, 45, dtype=dtype)
    if layout == "column":
        A = A.T.contiguous().T
    elif layout == "strided":
        A = _rand(rows, 90, dtype=dtype)[:, ::2]
    K = S._gram(A)
    ref = A @ A.T
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(K, ref, rtol=tol, atol=tol)
    assert torch.equal(K, K.T)  # exactly symmetric (one triangle, mirrored)
    assert K.dtype == dtype


def test_gram_falls_back_to_torch_for_autograd_tensors():
    A = _rand(6, 9).requires_grad_()
    K = S._gram(A)
    K.sum().backward()
    assert A.grad is not None


def test_take_columns_is_a_row_major_copy():
    G = _rand(11, 40)
    idx = torch.tensor([39, 3, 3, 17, 0])
    GS = S._take_columns(G, idx)
    assert torch.equal(GS, G[:, idx])
    assert GS.is_contiguous()
    GS[0, 0] = 1e9  # a copy
    assert G[0, 39] != 1e9
    assert torch.equal(S._take_columns(G.float(), idx), G.float()[:, idx])


def test_spd_solve_with_and_without_a_cholesky_factor():
    A = _rand(8, 8)
    spd = A @ A.T + 0.5 * torch.eye(8, dtype=torch.float64)
    b = _rand(8, seed=2)
    torch.testing.assert_close(S._spd_solve(spd, b), torch.linalg.solve(spd, b))
    indefinite = spd - 3.0 * float(torch.linalg.eigvalsh(spd).max()) * torch.eye(
        8, dtype=torch.float64
    )
    torch.testing.assert_close(S._spd_solve(indefinite, b), torch.linalg.solve(indefinite, b))


@pytest.mark.parametrize("size", [5, S._NP_LU_MAX - 1, S._NP_LU_MAX, 200])
def test_numpy_spd_solve_by_lu_below_the_cutoff_and_cholesky_above(size, monkeypatch):
    A = _rand(size, size, seed=size).numpy()
    spd = A @ A.T + 0.5 * np.eye(size)
    b = _rand(size, seed=1).numpy()
    expect = np.linalg.solve(spd, b)
    import scipy.linalg

    called = []
    real = scipy.linalg.cho_factor
    monkeypatch.setattr(
        scipy.linalg, "cho_factor", lambda *a, **k: called.append(1) or real(*a, **k)
    )
    np.testing.assert_allclose(S._np_spd_solve(spd, b), expect, rtol=1e-9, atol=1e-12)
    assert bool(called) == (size >= S._NP_LU_MAX)  # Cholesky only for the larger matrices
    indefinite = spd - 3.0 * np.linalg.eigvalsh(spd).max() * np.eye(size)
    np.testing.assert_allclose(S._np_spd_solve(indefinite, b), np.linalg.solve(indefinite, b),
                               rtol=1e-9, atol=1e-12)  # fmt: skip


def test_start_point_needs_no_power_iteration_without_alpha(monkeypatch):
    G, w = _rand(20, 50), _rand(50, seed=1)
    pb = Problem(G, w, 0.3)
    calls = []
    monkeypatch.setattr(S, "lipschitz", lambda *a, **k: calls.append(1) or lipschitz(*a, **k))
    torch.testing.assert_close(S._start(pb, 30), pb.w_bar - pb.gradient(pb.w_bar) / 7.0, rtol=0,
                               atol=1e-12)  # fmt: skip
    assert not calls
    pa = Problem(G, w, 0.3, 0.1 * _rand(50, seed=2))
    L = lipschitz(pa.G, pa.lam)
    torch.testing.assert_close(S._start(pa, 30), pa.w_bar - pa.gradient(pa.w_bar) / L)
    assert calls


def _case(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, 4, generator=g, dtype=torch.float64) @ torch.randn(
        4, p, generator=g, dtype=torch.float64
    ) + 0.2 * torch.randn(n, p, generator=g, dtype=torch.float64)
    return G, torch.randn(p, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iht_with_the_updated_gradient_follows_the_recomputed_one(bench, monkeypatch, seed):
    """Many support-keeping iterations on the fused path (blocks of 3 rows): the iterates stay
    those of the port, which recomputes the gradient from the residual every iteration."""
    monkeypatch.setattr(S, "_block_rows", lambda G: 3)
    G, w = _case(40, 150, seed)
    lam, k = 0.02, 30
    pb = Problem(G, w, lam)
    w0, s0 = S.hard_threshold(pb.w_bar, k)
    opts = SolverOptions(refit=False, max_iter=300, ftol=1e-12)
    wi, si, f, it, r = S._iht(pb, k, w0, s0, opts)
    Gn, wn = G.numpy(), w.numpy()
    w_ref, s_ref, f_ref = bench.np_iht(Gn, Gn @ wn, wn, lam, k, w0.numpy(), s0.numpy(),
                                       max_iter=300, ftol=1e-12)  # fmt: skip
    assert it > 20
    assert np.array_equal(si.numpy(), s_ref)
    assert f == pytest.approx(f_ref, rel=1e-10)
    np.testing.assert_allclose(wi.numpy(), w_ref, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(r, pb.y - G @ wi, rtol=1e-9, atol=1e-10)


@pytest.mark.filterwarnings("ignore:chita.*all-zero column:UserWarning")  # the reference rule
def test_chita_with_zero_columns_agrees_with_the_port(bench, monkeypatch):
    monkeypatch.setattr(S, "_block_rows", lambda G: 4)
    G, w = _case(30, 120, 5)
    G[:, ::7] = 0.0  # never eligible
    lam = 0.05
    Gn, wn = G.numpy(), w.numpy()
    for k in (10, 40):
        w_ref, s_ref = bench.np_chita(Gn, wn, lam, k)
        sol = solve(Problem(G, w, lam), k, "chita", SolverOptions(refit=False))
        assert np.array_equal(sol.support.numpy(), s_ref)
        assert not bool(sol.support[::7].any())
        f_ref = bench.np_objective(Gn, Gn @ wn, wn, lam, w_ref)
        assert sol.objective == pytest.approx(f_ref, rel=1e-9)


@pytest.mark.parametrize("n", [12, 90])  # Woodbury (n < k) and the primal solve (n >= k)
def test_refit_residual_is_the_full_residual(n):
    G, w = _case(n, 70, 3)
    pb = Problem(G, w, 0.4, 0.01 * _rand(70, seed=4))
    support = torch.zeros(70, dtype=torch.bool)
    support[torch.randperm(70, generator=torch.Generator().manual_seed(0))[:40]] = True
    wf, r = S._refit_point(pb, support)
    assert not bool(wf[~support].any())
    torch.testing.assert_close(r, pb.y - G @ wf)
    sol = solve(pb, 40, "bso")
    assert sol.objective == pytest.approx(pb.objective(sol.w), rel=1e-12)


@pytest.mark.filterwarnings("ignore:chita.*all-zero column:UserWarning")  # the reference rule
@pytest.mark.parametrize("seed", range(3))
def test_chita_keeps_k_when_fewer_than_k_eligible_weights_are_nonzero(seed):
    """w̄ already pruned and some of its kept weights in zero columns (dead units): the start
    has fewer than k nonzero eligible entries; the active set and the support are chosen among
    the eligible columns only, and the support has exactly k entries (it had fewer, or IHT
    failed, when ties at 0 picked ineligible columns)."""
    G, w = _case(20, 200, seed)
    w[20:] = 0.0  # 20 nonzero weights
    G[:, :10] = 0.0  # half of them in zero columns: 10 nonzero eligible starts
    G[:, 110:] = 0.0  # and half of the zero weights
    pb = Problem(G, w, 0.05)
    for k in (14, 18):
        for refit in (True, False):
            sol = solve(pb, k, "chita", SolverOptions(refit=refit))
            assert int(sol.support.sum()) == k
            assert not bool(sol.w[~sol.support].any())
            assert not bool(sol.support[:10].any() or sol.support[110:].any())  # eligible only
