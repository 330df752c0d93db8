"""CHITA's solvers against independent math: least squares, monotone IHT, exact counts."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
import torch

from masktopo.errors import MaskValidationError
from masktopo.pai.select import select_global
from masktopo.prune.solvers import (
    Problem,
    SolverOptions,
    blocks,
    hard_threshold,
    lipschitz,
    ridge_refit,
    solve,
)


def _problem(n=40, p=60, lam=0.0, seed=0, alpha=False):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, p, generator=g, dtype=torch.float64)
    w = torch.randn(p, generator=g, dtype=torch.float64)
    a = torch.randn(p, generator=g, dtype=torch.float64) * 0.1 if alpha else None
    return Problem(G, w, lam, a)


def test_bso_equals_lstsq_on_the_support_without_ridge():
    pb = _problem(n=80, p=50, lam=0.0)
    k = 20
    sol = solve(pb, k, "bso")
    assert int(sol.support.sum()) == k
    idx = torch.topk(pb.w_bar.abs(), k).indices
    assert set(sol.support.nonzero().squeeze(1).tolist()) == set(idx.tolist())
    ref = torch.linalg.lstsq(pb.G[:, idx], pb.y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(sol.w[idx], ref, rtol=1e-8, atol=1e-8)
    assert torch.count_nonzero(sol.w) <= k


@pytest.mark.parametrize("n", [10, 200])  # Woodbury (n < |S|) and the primal solve
def test_bso_with_ridge_equals_the_augmented_least_squares(n):
    pb = _problem(n=n, p=60, lam=0.7, alpha=True)
    k = 30
    sol = solve(pb, k, "bso")
    idx = sol.support.nonzero().squeeze(1)
    c = 2 * pb.lam
    # min ½‖y - G_S w‖² + λ‖w - w̄_S‖² + α_Sᵀw  <=>  normal equations of the stacked system
    A = torch.cat([pb.G[:, idx], (c**0.5) * torch.eye(len(idx), dtype=torch.float64)])
    rhs = torch.cat([pb.y, (c**0.5) * pb.w_bar[idx] - pb.alpha[idx] / c**0.5])
    ref = torch.linalg.lstsq(A, rhs.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(sol.w[idx], ref, rtol=1e-7, atol=1e-8)
    # the re-fit never does worse than magnitude pruning on the same support
    mp = solve(pb, k, "mp")
    assert sol.objective <= pb.objective(pb.w_bar * sol.support) + 1e-9
    assert sol.objective <= mp.objective + 1e-9 or not torch.equal(mp.support, sol.support)


def test_ridge_refit_forms_agree():
    pb = _problem(n=15, p=40, lam=0.3)
    idx = torch.arange(0, 40, 2)
    w1 = ridge_refit(pb.G, pb.y, pb.w_bar, pb.lam, None, idx)  # n < |S|: Woodbury
    G2 = torch.cat([pb.G, torch.zeros(10, 40, dtype=torch.float64)])  # n >= |S|: primal
    w2 = ridge_refit(G2, G2 @ pb.w_bar, pb.w_bar, pb.lam, None, idx)
    torch.testing.assert_close(w1, w2)


def test_iht_objective_never_increases():
    import masktopo.prune.solvers as S

    pb = _problem(n=30, p=80, lam=0.05, seed=3)
    k = 15
    seen = []
    L = lipschitz(pb.G, pb.lam)
    w, s = hard_threshold(pb.w_bar - pb.gradient(pb.w_bar) / L, k)
    opts = SolverOptions(max_iter=1, ftol=0.0)
    f = pb.objective(w)
    seen.append(f)
    for _ in range(60):
        w, s, f, _, _ = S._iht(pb, k, w, s, opts)
        assert int(s.sum()) == k
        assert torch.count_nonzero(w) <= k
        seen.append(f)
    assert all(b <= a + 1e-9 * abs(a) for a, b in itertools.pairwise(seen))
    assert seen[-1] < seen[0]  # it moved


def test_lipschitz_bounds_the_largest_eigenvalue():
    pb = _problem(n=30, p=50, lam=0.2)
    exact = float(torch.linalg.matrix_norm(pb.G, 2)) ** 2 + 2 * pb.lam
    L = lipschitz(pb.G, pb.lam, iters=200)
    assert exact <= L <= 1.06 * exact


@pytest.mark.parametrize("method", ["mp", "bso", "iht", "chita", "bso-block"])
def test_every_solver_keeps_exactly_k(method):
    pb = _problem(n=25, p=90, lam=0.1, seed=1)
    opts = SolverOptions(block_size=20, layer_sizes=(50, 40))
    for k in (1, 9, 45, 90):
        sol = solve(pb, k, method, opts)
        assert int(sol.support.sum()) == k
        assert not bool((sol.w[~sol.support] != 0).any())
        assert sol.objective == pytest.approx(pb.objective(sol.w), rel=1e-9)


def test_chita_and_iht_beat_magnitude_pruning():
    pb = _problem(n=50, p=120, lam=0.01, seed=2)
    for k in (20, 60):
        mp = solve(pb, k, "mp").objective
        bso = solve(pb, k, "bso").objective
        iht = solve(pb, k, "iht").objective
        chita = solve(pb, k, "chita").objective
        assert bso <= mp
        assert iht <= bso + 1e-9  # IHT starts at MP's support and never goes up
        assert chita < mp


def _zero_column_problem(seed=0):
    """Half of the columns of G are zero and hold the largest weights (as when a few samples
    give no gradient to some weights)."""
    g = torch.Generator().manual_seed(seed)
    G = 1e-3 * torch.randn(10, 200, generator=g, dtype=torch.float64)
    G[:, :100] = 0.0
    w = torch.randn(200, generator=g, dtype=torch.float64)
    w[:100] *= 5
    return Problem.build(G, w, l2=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_chita_prunes_zero_columns_as_the_reference_and_says_so(seed):
    pb = _zero_column_problem(seed)
    with pytest.warns(UserWarning, match=r"chita: \d+ of the k = 50 largest weights have an "
                      "all-zero column"):  # fmt: skip
        sol = solve(pb, 50, "chita")
    assert int(sol.support.sum()) == 50 and not bool(sol.support[:100].any())
    assert sol.objective > solve(pb, 50, "mp").objective  # the price of the reference's rule


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("refit", [True, False])
def test_chita_keeping_zero_columns_is_no_worse_than_magnitude_pruning(seed, refit):
    pb = _zero_column_problem(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the columns are kept
        sol = solve(pb, 50, "chita", SolverOptions(keep_zero_columns=True, refit=refit))
    assert int(sol.support.sum()) == 50
    assert sol.objective <= solve(pb, 50, "bso").objective * (1 + 1e-12)
    assert sol.objective == pytest.approx(pb.objective(sol.w), rel=1e-12)


def test_chita_without_zero_columns_among_the_largest_does_not_warn():
    pb = _problem(n=40, p=60, lam=0.1)
    pb.G[:, torch.topk(pb.w_bar.abs(), 40, largest=False).indices[:5]] = 0.0  # small weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve(Problem(pb.G, pb.w_bar, pb.lam), 10, "chita")


def test_exact_selection_on_a_tiny_problem():
    """With p small enough to enumerate every support, BSO's re-fit on the best support is the
    optimum; IHT/CHITA must reach an objective close to it."""
    import itertools

    pb = _problem(n=12, p=10, lam=0.05, seed=4)
    k = 3
    best = min(pb.objective(_scatter(pb, idx)) for idx in itertools.combinations(range(10), k))
    for method in ("iht", "chita"):
        f = solve(pb, k, method).objective
        assert best <= f + 1e-9
        assert f <= best * 1.5 + 1e-9


def _scatter(pb, idx):
    idx = torch.tensor(idx)
    w = torch.zeros(pb.p, dtype=torch.float64)
    w[idx] = ridge_refit(pb.G, pb.y, pb.w_bar, pb.lam, None, idx)
    return w


def test_mp_is_the_trainers_global_magnitude_pruning():
    pb = _problem(p=70)
    w = {"a": pb.w_bar[:30].reshape(5, 6), "b": pb.w_bar[30:].reshape(4, 10)}
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    ref = select_global({n: t.abs().float() for n, t in w.items()}, 25, g1)
    sol = solve(pb, 25, "mp", generator=g2)
    torch.testing.assert_close(sol.support, torch.cat([ref["a"].reshape(-1), ref["b"].reshape(-1)]))


def test_blocks_cut_layers():
    assert blocks([1000, 300, 1250], 500) == [(0, 500), (500, 1000), (1000, 1300),
                                              (1300, 1800), (1800, 2550)]  # fmt: skip


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("n", [30, 8])  # 8 < the kept count of some blocks: Woodbury
def test_block_bso_numpy_route_equals_the_batched_route(alpha, n):
    """On the CPU the blocks are solved one by one in numpy; the batched torch route (the GPU's)
    gives the same weights, support and objective."""
    pb = _problem(n=n, p=140, lam=0.2, seed=11)
    if alpha:
        pb.alpha = torch.randn(140, generator=torch.Generator().manual_seed(3), dtype=pb.G.dtype)
    opts = SolverOptions(block_size=20, layer_sizes=(60, 80))
    cpu = solve(pb, 70, "bso-block", opts)
    batched = solve(pb, 70, "bso-block", dataclasses.replace(opts, batched_blocks=True))
    assert torch.equal(cpu.support, batched.support) and int(cpu.support.sum()) == 70
    torch.testing.assert_close(cpu.w, batched.w, rtol=1e-9, atol=1e-11)
    assert cpu.objective == pytest.approx(batched.objective, rel=1e-10)
    assert cpu.objective == pytest.approx(pb.objective(cpu.w), rel=1e-10)


@pytest.mark.parametrize("k", [70, 5, 140])  # 5: most blocks keep nothing; 140: all kept
def test_block_bso_batched_route_with_uneven_blocks(k):
    """Blocks of different widths (each layer's last one takes the remainder), blocks with no
    kept column, and groups solved in both forms (n = 12 below some blocks' kept counts)."""
    pb = _problem(n=12, p=140, lam=0.3, seed=4)
    opts = SolverOptions(block_size=25, layer_sizes=(60, 80))  # widths 25, 35 | 25, 25, 30
    cpu = solve(pb, k, "bso-block", opts)
    batched = solve(pb, k, "bso-block", dataclasses.replace(opts, batched_blocks=True))
    assert torch.equal(cpu.support, batched.support) and int(cpu.support.sum()) == k
    torch.testing.assert_close(cpu.w, batched.w, rtol=1e-9, atol=1e-11)
    assert batched.objective == pytest.approx(pb.objective(batched.w), rel=1e-10)
    assert not batched.w[~batched.support].any()


def test_block_products_are_the_blocks_own():
    from masktopo.prune.solvers import _block_products

    g = torch.Generator().manual_seed(2)
    G = torch.randn(6, 140, generator=g, dtype=torch.float64)
    v = torch.randn(140, generator=g, dtype=torch.float64)
    bounds = blocks([60, 80], 25)
    want = torch.stack([G[:, a:b] @ v[a:b] for a, b in bounds])
    torch.testing.assert_close(_block_products(G, v, bounds), want, rtol=1e-14, atol=1e-14)


def test_block_bso_with_one_block_is_bso_and_blocks_are_independent():
    pb = _problem(n=30, p=60, lam=0.2, seed=6)
    one = solve(pb, 25, "bso-block", SolverOptions(block_size=1000, layer_sizes=(60,)))
    full = solve(pb, 25, "bso")
    torch.testing.assert_close(one.w, full.w)
    two = solve(pb, 25, "bso-block", SolverOptions(block_size=30, layer_sizes=(60,)))
    for lo, hi in ((0, 30), (30, 60)):
        idx = lo + two.support[lo:hi].nonzero().squeeze(1)
        Gb = pb.G[:, lo:hi]
        ref = ridge_refit(pb.G, Gb @ pb.w_bar[lo:hi], pb.w_bar, pb.lam, None, idx)
        torch.testing.assert_close(two.w[idx], ref)


def test_bad_problems_and_arguments_are_errors_not_silent_solutions():
    # NaN in G was solved silently (every solver returned a support, bso NaN weights); a
    # negative or NaN ridge weight gave a negative objective; k=2.7 kept 2; a dict of options
    # failed deep inside
    pb = _problem(n=20, p=10)
    G, w = pb.G, pb.w_bar
    nan_g = G.clone()
    nan_g[0, 0] = float("nan")
    cases = [
        (lambda: Problem(nan_g, w, 0.1), "G has 1 NaN or infinite"),
        (lambda: Problem(G, w * float("inf"), 0.1), "w_bar has 10 NaN or infinite"),
        (lambda: Problem(G, w, -5.0), r"lam \(the ridge weight\) must be finite and >= 0"),
        (lambda: Problem(G, w, float("nan")), "lam .* must be finite"),
        (lambda: Problem(G.numpy(), w, 0.1), "G must be a floating-point torch tensor, not ndarray"),
        (lambda: Problem(G.long(), w, 0.1), "G must be a floating-point torch tensor, not a torch.int64"),
        (lambda: Problem.build(G.numpy(), w.numpy(), l2=0.1), "G must be a floating-point"),
        (lambda: Problem(G, w, 0.1, torch.ones(3)), r"alpha must be \[p\]"),
        (lambda: solve(pb, 2.7), r"k \(weights kept\) must be an integer, not 2\.7"),
        (lambda: solve(pb, "3"), "k .* must be an integer"),
        (lambda: solve(pb, 3, options={"max_iter": 5}), "options must be a SolverOptions, not dict"),
        (lambda: solve(pb, 3, generator=0), "generator must be a torch.Generator, not int"),
        (lambda: solve({"G": G}, 3), "problem must be a Problem, not dict"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(MaskValidationError, match=message):
            call()
    assert int(solve(pb, np.int64(3)).support.sum()) == 3  # numpy integers are integers
    assert Problem(G.float(), w, 0).w_bar.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["mp", "bso", "iht", "chita", "bso-block"])
def test_cuda_solvers_match_the_cpu(method):
    pb = _problem(n=12, p=140, lam=0.3, seed=4, alpha=True)
    opts = SolverOptions(block_size=25, layer_sizes=(60, 80))  # bso-block: the batched route
    cpu = solve(pb, 40, method, opts, generator=torch.Generator().manual_seed(0))
    dev = Problem(pb.G.cuda(), pb.w_bar.cuda(), pb.lam, pb.alpha.cuda())
    gpu = solve(dev, 40, method, opts, generator=torch.Generator("cuda").manual_seed(0))
    assert gpu.w.device.type == "cuda"
    assert torch.equal(gpu.support.cpu(), cpu.support)
    torch.testing.assert_close(gpu.w.cpu(), cpu.w, rtol=1e-8, atol=1e-10)
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-9)
