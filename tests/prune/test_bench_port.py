"""The numpy port of the reference in benchmarks/bench_chita.py gives our solvers' results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masktopo.prune import Problem, SolverOptions, solve


def _case(n=30, p=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a few strong directions, as gradient matrices have
    G = torch.randn(n, 5, generator=g, dtype=torch.float64) @ torch.randn(
        5, p, generator=g, dtype=torch.float64
    ) + 0.1 * torch.randn(n, p, generator=g, dtype=torch.float64)
    w = torch.randn(p, generator=g, dtype=torch.float64)
    return G, w


@pytest.mark.parametrize("method", ["bso", "bso-block", "chita"])
def test_port_and_ours_agree(bench, method):
    G, w = _case()
    lam = 0.05
    Gn, wn = G.numpy(), w.numpy()
    sizes = (120, 80)
    opts = SolverOptions(refit=False, block_size=50, layer_sizes=sizes)
    for k in (20, 60):
        if method == "bso":
            w_ref, s_ref = bench.np_bso(Gn, wn, lam, k)
        elif method == "bso-block":
            w_ref, s_ref = bench.np_bso_block(Gn, wn, lam, k, sizes, 50)
        else:
            w_ref, s_ref = bench.np_chita(Gn, wn, lam, k)
        sol = solve(Problem(G, w, lam), k, method, opts)
        assert np.array_equal(sol.support.numpy(), s_ref)
        np.testing.assert_allclose(sol.w.numpy(), w_ref, rtol=1e-6, atol=1e-9)
        f_ref = bench.np_objective(Gn, Gn @ wn, wn, lam, w_ref)
        assert sol.objective == pytest.approx(f_ref, rel=1e-9)
