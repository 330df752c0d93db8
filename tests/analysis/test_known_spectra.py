"""Closed-form spectra of textbook bipartite graphs, checked against both the dense reference
(tests/analysis/reference.py) and masktopo.analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

try:
    from . import reference as ref
except ImportError:  # tests/analysis is not a package: imported from sys.path
    import reference as ref


def _masktopo_metrics(mask, weight=None, conv="unrolled", **kw):
    from masktopo.analysis import layer_metrics

    m = torch.as_tensor(np.asarray(mask) != 0)
    w = None if weight is None else torch.as_tensor(np.asarray(weight, dtype=np.float64))
    return layer_metrics(m, w, conv=conv, **kw)


def _reference_metrics(mask, weight=None, conv="unrolled", **kw):
    return ref.layer_metrics(np.asarray(mask), weight, conv, **kw)


@pytest.fixture(params=["reference", "masktopo"])
def metrics(request):
    """``metrics(mask, weight=None, conv=..., gate=..., imdb=..., narc=...) -> dict``."""
    return _reference_metrics if request.param == "reference" else _masktopo_metrics


def _top_sv(B, k=2):
    from masktopo.analysis.spectral import top_singular_values

    s = top_singular_values(torch.as_tensor(np.asarray(B, dtype=np.float64)), k=k)
    if isinstance(s, torch.Tensor):
        assert s.dtype == torch.float64
        s = s.cpu().numpy()
    s = np.asarray(s)
    assert s.dtype == np.float64
    return s


def _adjacency(B):
    B = np.asarray(B, dtype=np.float64)
    m, n = B.shape
    return np.block([[np.zeros((m, m)), B], [B.T, np.zeros((n, n))]])


def _abs_eigs_desc(B):
    return np.sort(np.abs(np.linalg.eigvalsh(_adjacency(B))))[::-1]


def _blocks(shapes):
    """Block-diagonal 0/1 matrix of complete blocks ``ones(a_i, b_i)``."""
    m = sum(a for a, _ in shapes)
    n = sum(b for _, b in shapes)
    B = np.zeros((m, n))
    r = c = 0
    for a, b in shapes:
        B[r : r + a, c : c + b] = 1
        r, c = r + a, c + b
    return B


def _circulant(n, offsets):
    """n x n 0/1 circulant with ones at ``(i, (i + o) % n)``: every row and column has
    ``len(offsets)`` ones."""
    B = np.zeros((n, n))
    for i in range(n):
        for o in offsets:
            B[i, (i + o) % n] = 1
    return B


def _circulant_eigs(n, offsets):
    """Eigenvalues of the circulant above: ``sum_o w^(k o)``, ``w = exp(2 pi i / n)``."""
    k = np.arange(n)
    return np.array([sum(np.exp(2j * np.pi * kk * o / n) for o in offsets) for kk in k])


# --------------------------------------------------------------------------------------------
# complete bipartite K_{a,b}
# --------------------------------------------------------------------------------------------

COMPLETE = [(3, 3), (4, 4), (3, 5), (6, 4), (2, 7), (7, 2), (5, 12)]


@pytest.mark.parametrize(("a", "b"), COMPLETE)
def test_complete_bipartite(metrics, a, b):
    B = np.ones((a, b))  # a outputs, each with fan-in b; b inputs, each with fan-out a
    r = metrics(B)
    assert r["n_out"] == a and r["n_in"] == b and r["n_edges"] == a * b
    assert r["n_out_active"] == a and r["n_in_active"] == b
    assert r["density"] == pytest.approx(1.0)
    assert r["deg_out_mean"] == pytest.approx(b) and r["deg_in_mean"] == pytest.approx(a)
    assert r["n_components"] == 1
    assert r["mu0"] == pytest.approx(math.sqrt(a * b), rel=1e-12)
    assert abs(r["mu_hat"]) <= 1e-12
    assert r["spectral_gap"] == pytest.approx(math.sqrt(a * b), rel=1e-12)
    bound = math.sqrt(a - 1) + math.sqrt(b - 1)
    assert r["ramanujan_bound"] == pytest.approx(bound, rel=1e-12)
    if b >= 3 and a > 1:  # n23 gate: mean fan-in >= 3, mean fan-out > 1
        assert r["ramanujan_gap"] == pytest.approx(bound, abs=1e-12)
        assert r["ramanujan_gap_norm"] == pytest.approx(1.0, abs=1e-12)
        assert r["is_ramanujan"] is True
    else:
        assert math.isnan(r["ramanujan_gap"]) and math.isnan(r["ramanujan_gap_norm"])
        assert r["is_ramanujan"] is None
    # D^-1/2 B D^-1/2 = ones / sqrt(ab): singular values 1, 0, ...
    assert r["normalized_spectral_gap"] == pytest.approx(1.0, abs=1e-12)
    assert r["conductance_lower"] == pytest.approx(0.5, abs=1e-12)
    assert r["conductance_upper"] == pytest.approx(math.sqrt(2), abs=1e-12)
    # one nested group: every input has fan-out a; the group graph is K_{a,b} itself
    if a >= 3 and b > 1:
        c = max(a, b) / (a + b - 1)
        assert r["imdb_ramanujan_gap"] == pytest.approx(c * bound, abs=1e-12)
    else:
        assert math.isnan(r["imdb_ramanujan_gap"])
    # spec extras, when returned: I23's Delta_s and the normalized IMDB ("irm_norm")
    if "ramanujan_gap_spectral" in r and b >= 3 and a > 1:
        delta_s = 2 * math.sqrt(math.sqrt(a * b) - 1)
        assert r["ramanujan_gap_spectral"] == pytest.approx(delta_s, abs=1e-12)
    if "imdb_ramanujan_gap_norm" in r:
        assert r["imdb_n_groups"] == int(a >= 3 and b > 1)
        if a >= 3 and b > 1:
            assert r["imdb_ramanujan_gap_norm"] == pytest.approx(1.0, abs=1e-12)
    if a >= 3 and b >= 3:
        # NaRC: nL=b, nR=a, dL=a, e=2ab: (sqrt(ab) - |2ab - ab|) / ab
        assert r["narc"] == pytest.approx(1 / math.sqrt(a * b) - 1, abs=1e-12)
    else:
        assert math.isnan(r["narc"])


@pytest.mark.parametrize(("a", "b"), [(4, 4), (5, 12), (64, 27), (300, 784)])
@pytest.mark.parametrize("route", ["auto", "batched"])
def test_complete_bipartite_sigma2_below_the_floor_is_exactly_zero(a, b, route):
    """K_{m,n} has rank one: σ₂ = 0 exactly. The solvers give rounding (1e-44 for K_{300,784}),
    reported as 0 by the floor |σ| < 1e-12·σ₁ (masktopo.analysis.metrics.SV_FLOOR), in every
    spectrum: binary, weighted (rank-one weights), normalized, IMDB groups."""
    from masktopo.analysis import analyze, layer_metrics
    from masktopo.analysis.metrics import SV_FLOOR
    from masktopo.masks import MaskSet

    assert SV_FLOOR == 1e-12
    mask = torch.ones(a, b, dtype=torch.bool)
    weight = torch.full((a, b), 0.3, dtype=torch.float64)
    r = layer_metrics(mask, weight, route=route)
    assert r["mu_hat"] == 0.0 and r["weighted_mu_hat"] == 0.0  # exactly, not a denormal
    assert r["spectral_gap"] == r["mu0"] == pytest.approx(math.sqrt(a * b), rel=1e-12)
    assert r["weighted_spectral_gap"] == r["weighted_mu0"]
    assert r["normalized_spectral_gap"] == 1.0
    bound = math.sqrt(a - 1) + math.sqrt(b - 1)
    assert r["ramanujan_gap"] == bound  # bound − 0
    if a >= 3 and b > 1:  # the one IMDB group is K_{a,b} itself: its σ₂ is floored too
        assert r["imdb_ramanujan_gap"] == pytest.approx(max(a, b) / (a + b - 1) * bound)
    df = analyze(MaskSet({"k.weight": mask}), route=route)
    assert df.loc[0, "mu_hat"] == 0.0


def test_floor_keeps_values_above_it_and_scales_with_sigma1():
    from masktopo.analysis.metrics import floor_singular_values

    assert floor_singular_values(None) is None
    assert floor_singular_values(np.array([484.97, 3.9e-44])).tolist() == [484.97, 0.0]
    big = 1e20
    assert floor_singular_values(np.array([big, 2e7])).tolist() == [big, 0.0]  # 2e7 < 1e-12·1e20
    kept = np.array([1.0, 2e-12])  # just above the floor: untouched
    assert floor_singular_values(kept).tolist() == [1.0, 2e-12]
    assert floor_singular_values(np.array([1e-30, 1e-31])).tolist() == [1e-30, 1e-31]  # relative
    assert floor_singular_values(np.zeros(2)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("a", "b"), [(3, 3), (4, 6), (5, 3)])
def test_complete_bipartite_i23_variants(metrics, a, b):
    B = np.ones((a, b))
    r = metrics(B, gate="i23", imdb="i23", narc="undirected")
    bound = math.sqrt(a - 1) + math.sqrt(b - 1)
    assert r["ramanujan_gap"] == pytest.approx(bound, abs=1e-12)
    assert r["is_ramanujan"] is True
    assert r["imdb_ramanujan_gap"] == pytest.approx(bound, abs=1e-12)  # plain mean, no c_d
    assert r["narc"] == pytest.approx(1 / math.sqrt(a * b), abs=1e-12)  # e = ab


def test_complete_bipartite_gates_differ(metrics):
    # K_{2,5}: mean fan-in 5, mean fan-out 2 -> passes n23, fails i23
    B = np.ones((2, 5))
    assert metrics(B, gate="n23")["is_ramanujan"] is True
    r = metrics(B, gate="i23")
    assert r["is_ramanujan"] is None and math.isnan(r["ramanujan_gap"])
    assert r["ramanujan_bound"] == pytest.approx(1 + 2, rel=1e-12)
    # the imdb group (d=2 < 3) fails both imdb gates
    assert math.isnan(metrics(B, imdb="n23")["imdb_ramanujan_gap"])
    # K_{5,2}: group degree d=5 >= 3 with 2 inputs: passes the imdb n23 gate (|S|>=2) only
    B = np.ones((5, 2))
    c = 5 / 6
    assert metrics(B, imdb="n23")["imdb_ramanujan_gap"] == pytest.approx(c * 3, abs=1e-12)
    assert math.isnan(metrics(B, imdb="i23")["imdb_ramanujan_gap"])


def test_pm_pairing_trap_k44(metrics):
    """mu_hat is sigma2(B) = the THIRD largest |eig(A)|, not the second (which is -sigma1)."""
    B = np.ones((4, 4))
    eigs = _abs_eigs_desc(B)
    assert eigs[0] == pytest.approx(4) and eigs[1] == pytest.approx(4)
    assert abs(eigs[2]) < 1e-12
    r = metrics(B)
    assert r["mu0"] == pytest.approx(eigs[0], rel=1e-12)
    assert abs(r["mu_hat"] - eigs[2]) < 1e-12
    assert abs(r["mu_hat"]) < 1e-12 and r["mu_hat"] != pytest.approx(eigs[1])
    assert r["ramanujan_gap"] == pytest.approx(2 * math.sqrt(3), abs=1e-12)
    assert r["is_ramanujan"] is True


def test_complete_bipartite_rank1_weights(metrics):
    rng = np.random.default_rng(0)
    a, b = 5, 7
    u = rng.uniform(0.5, 2.0, a) * rng.choice([-1, 1], a)
    v = rng.uniform(0.5, 2.0, b) * rng.choice([-1, 1], b)
    W = np.outer(u, v)  # |W| = |u| |v|^T, rank 1
    r = metrics(np.ones((a, b)), W)
    nu = np.linalg.norm(u) * np.linalg.norm(v)
    assert r["weighted_mu0"] == pytest.approx(nu, rel=1e-12)
    assert abs(r["weighted_mu_hat"]) <= 1e-12 * nu
    assert r["weighted_spectral_gap"] == pytest.approx(nu, rel=1e-12)
    c = max(a, b) / (a + b - 1)
    assert r["imdb_weighted_gap"] == pytest.approx(c * nu, rel=1e-12)
    bound = math.sqrt(a - 1) + math.sqrt(b - 1)
    expected = math.sqrt(bound**2 + nu**2 + (c * bound) ** 2 + (c * nu) ** 2)
    assert r["full_spectrum_norm"] == pytest.approx(expected, rel=1e-12)
    # structure is untouched by the weights
    assert r["mu0"] == pytest.approx(math.sqrt(a * b), rel=1e-12)


def test_weights_are_masked_first_and_absolute(metrics):
    rng = np.random.default_rng(1)
    M = np.ones((4, 6))
    M[0, :3] = 0
    W = rng.normal(size=(4, 6))
    W_masked_out = W.copy()
    W_masked_out[M == 0] = 1e6  # must be ignored
    r1 = metrics(M, W)
    r2 = metrics(M, W_masked_out)
    r3 = metrics(M, -W)
    s = np.linalg.svd(np.abs(W * M), compute_uv=False)
    for r in (r1, r2, r3):
        assert r["weighted_mu0"] == pytest.approx(s[0], rel=1e-12)
        assert r["weighted_mu_hat"] == pytest.approx(s[1], rel=1e-12)
    # unit weights reproduce the unweighted spectrum; scaling scales it
    r = metrics(M, 2.5 * M)
    assert r["weighted_mu0"] == pytest.approx(2.5 * r["mu0"], rel=1e-12)
    assert r["weighted_mu_hat"] == pytest.approx(2.5 * r["mu_hat"], rel=1e-12)


# --------------------------------------------------------------------------------------------
# disjoint unions, matchings, stars
# --------------------------------------------------------------------------------------------

UNIONS = [
    [(2, 3), (4, 4), (1, 5), (3, 2)],
    [(3, 3), (3, 3)],
    [(1, 1), (2, 2), (5, 1)],
    [(6, 2), (2, 6), (3, 4)],
]


@pytest.mark.parametrize("shapes", UNIONS, ids=str)
def test_disjoint_complete_blocks(metrics, shapes):
    B = _blocks(shapes)
    sv = sorted((math.sqrt(a * b) for a, b in shapes), reverse=True)
    r = metrics(B)
    assert r["n_components"] == len(shapes)
    assert r["n_edges"] == sum(a * b for a, b in shapes)
    assert r["mu0"] == pytest.approx(sv[0], rel=1e-12)
    assert r["mu_hat"] == pytest.approx(sv[1], rel=1e-12)
    assert r["spectral_gap"] == pytest.approx(sv[0] - sv[1], abs=1e-12)
    # each component contributes a singular value 1 to D^-1/2 B D^-1/2
    assert abs(r["normalized_spectral_gap"]) < 1e-12
    assert abs(r["conductance_lower"]) < 1e-12
    assert abs(r["conductance_upper"]) < 1e-6
    # the adjacency spectrum is +-sigma_i plus |n_out - n_in| zeros
    m, n = B.shape
    expected = np.sort(np.concatenate([sv, -np.array(sv), np.zeros(m + n - 2 * len(sv))]))
    assert np.allclose(np.linalg.eigvalsh(_adjacency(B)), expected, atol=1e-12)


@pytest.mark.parametrize("shapes", UNIONS, ids=str)
def test_top_singular_values_blocks(shapes):
    B = _blocks(shapes)
    sv = sorted((math.sqrt(a * b) for a, b in shapes), reverse=True)
    s = _top_sv(B, k=2)
    assert s.shape == (2,)
    assert np.allclose(s, sv[:2], rtol=1e-12, atol=1e-12)
    s_ref = ref.singular_values(B)[:2]
    assert np.allclose(s_ref, sv[:2], rtol=1e-12, atol=1e-12)


def test_top_singular_values_batch():
    shapes = [(2, 3), (4, 4), (1, 5)]
    B = _blocks(shapes)
    batch = np.stack([B, 2 * B, np.ones_like(B), B[::-1]])
    s = _top_sv(batch, k=2)
    assert s.shape == (4, 2)
    expected = np.array(
        [[4, math.sqrt(6)], [8, 2 * math.sqrt(6)], [math.sqrt(B.size), 0], [4, math.sqrt(6)]]
    )
    assert np.allclose(s, expected, rtol=1e-12, atol=1e-12)
    assert np.all(s[:, 0] >= s[:, 1])
    # agrees with the third largest |eigenvalue| of the full adjacency
    for Bi, si in zip(batch, s, strict=True):
        eigs = _abs_eigs_desc(Bi)
        assert si[0] == pytest.approx(eigs[0], rel=1e-12)
        assert si[1] == pytest.approx(eigs[2], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 9])
def test_perfect_matching(metrics, n):
    B = np.eye(n)
    w = np.arange(1.0, n + 1)
    r = metrics(B, np.diag(-w))
    assert r["n_components"] == n
    assert r["mu0"] == pytest.approx(1.0, rel=1e-12)
    assert r["mu_hat"] == pytest.approx(1.0, rel=1e-12)
    assert abs(r["spectral_gap"]) < 1e-12
    assert r["deg_out_mean"] == 1 and r["deg_in_mean"] == 1
    assert r["ramanujan_bound"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(r["ramanujan_gap"]) and r["is_ramanujan"] is None
    assert math.isnan(r["imdb_ramanujan_gap"]) and math.isnan(r["imdb_weighted_gap"])
    assert math.isnan(r["narc"])
    assert abs(r["normalized_spectral_gap"]) < 1e-12
    assert r["weighted_mu0"] == pytest.approx(n, rel=1e-12)
    assert r["weighted_mu_hat"] == pytest.approx(n - 1, rel=1e-12)
    assert r["weighted_spectral_gap"] == pytest.approx(1.0, rel=1e-12)
    # every component of the full-spectrum coordinate is gated: the norm is 0
    assert r["full_spectrum_norm"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [3, 8])
@pytest.mark.parametrize("orientation", ["one_output", "one_input"])
def test_star(metrics, n, orientation):
    B = np.ones((1, n)) if orientation == "one_output" else np.ones((n, 1))
    r = metrics(B, 0.5 * B)
    assert r["n_edges"] == n and r["n_components"] == 1
    assert r["mu0"] == pytest.approx(math.sqrt(n), rel=1e-12)
    assert r["weighted_mu0"] == pytest.approx(0.5 * math.sqrt(n), rel=1e-12)
    # one node on a side: sigma2 and everything built on it is undefined
    for key in (
        "mu_hat",
        "spectral_gap",
        "ramanujan_gap",
        "ramanujan_gap_norm",
        "weighted_mu_hat",
        "weighted_spectral_gap",
        "normalized_spectral_gap",
        "conductance_lower",
        "conductance_upper",
        "narc",
    ):
        assert math.isnan(r[key]), key
    assert r["is_ramanujan"] is None
    assert r["ramanujan_bound"] == pytest.approx(math.sqrt(n - 1), rel=1e-12)


def test_isolated_nodes_do_not_change_the_spectrum(metrics):
    B = _blocks([(2, 3), (4, 4)])
    padded = np.zeros((B.shape[0] + 3, B.shape[1] + 5))
    padded[1:-2, 2:-3] = B
    r, rp = metrics(B), metrics(padded)
    assert rp["n_out"] == r["n_out"] + 3 and rp["n_in"] == r["n_in"] + 5
    assert rp["n_out_active"] == r["n_out_active"] and rp["n_in_active"] == r["n_in_active"]
    for key in ("mu0", "mu_hat", "ramanujan_gap", "normalized_spectral_gap", "deg_out_mean"):
        assert rp[key] == pytest.approx(r[key], rel=1e-12, abs=1e-12), key
    assert rp["n_components"] == 2
    assert rp["density"] == pytest.approx(B.sum() / padded.size, rel=1e-12)


# --------------------------------------------------------------------------------------------
# biregular graphs
# --------------------------------------------------------------------------------------------

CIRCULANTS = [
    (7, (0, 1, 3)),
    (9, (0, 1, 2, 5)),
    (12, (0, 2, 3, 7, 11)),
    (8, (0, 1, 2)),
    (20, (0, 1, 2)),
]


@pytest.mark.parametrize(("n", "offsets"), CIRCULANTS)
def test_regular_circulant(metrics, n, offsets):
    B = _circulant(n, offsets)
    d = len(offsets)
    lam = np.sort(np.abs(_circulant_eigs(n, offsets)))[::-1]  # = singular values (normal matrix)
    r = metrics(B)
    assert r["mu0"] == pytest.approx(d, rel=1e-12)
    assert r["mu_hat"] == pytest.approx(lam[1], rel=1e-12, abs=1e-12)
    assert r["deg_out_mean"] == d and r["deg_in_mean"] == d
    assert r["ramanujan_bound"] == pytest.approx(2 * math.sqrt(d - 1), rel=1e-12)
    assert r["ramanujan_gap"] == pytest.approx(2 * math.sqrt(d - 1) - lam[1], abs=1e-12)
    assert r["is_ramanujan"] is bool(lam[1] <= 2 * math.sqrt(d - 1))
    # regular: D^-1/2 B D^-1/2 = B / d
    assert r["normalized_spectral_gap"] == pytest.approx(1 - lam[1] / d, abs=1e-12)
    assert r["mu0"] == pytest.approx(math.sqrt(r["deg_in_mean"] * r["deg_out_mean"]), rel=1e-12)


@pytest.mark.parametrize(("n", "offsets", "shift"), [(7, (0, 1, 3), 2), (10, (0, 3, 4), 5)])
def test_biregular_stacked_circulants(metrics, n, offsets, shift):
    """[C, C'] with C' a shifted circulant: outputs have degree 2c, inputs degree c."""
    c = len(offsets)
    C1 = _circulant(n, offsets)
    C2 = _circulant(n, tuple(o + shift for o in offsets))
    B = np.hstack([C1, C2])
    lam1 = _circulant_eigs(n, offsets)
    lam2 = _circulant_eigs(n, tuple(o + shift for o in offsets))
    sv = np.sort(np.sqrt(np.abs(lam1) ** 2 + np.abs(lam2) ** 2))[::-1]  # B B^T = C1C1^T + C2C2^T
    r = metrics(B)
    assert r["deg_out_mean"] == 2 * c and r["deg_in_mean"] == c
    assert r["mu0"] == pytest.approx(math.sqrt(2 * c * c), rel=1e-12)
    assert r["mu_hat"] == pytest.approx(sv[1], rel=1e-12, abs=1e-12)
    bound = math.sqrt(c - 1) + math.sqrt(2 * c - 1)
    assert r["ramanujan_gap"] == pytest.approx(bound - sv[1], abs=1e-12)
    assert r["normalized_spectral_gap"] == pytest.approx(
        1 - sv[1] / math.sqrt(2 * c * c), abs=1e-12
    )


@pytest.mark.parametrize(("p", "q"), [(1, 3), (2, 2), (3, 1)])
def test_biregular_kronecker(metrics, p, q):
    """kron(C, ones(p, q)): output degree d q, input degree d p; sigma = sigma(C) sqrt(pq)."""
    n, offsets = 7, (0, 1, 3)
    d = len(offsets)
    B = np.kron(_circulant(n, offsets), np.ones((p, q)))
    lam = np.sort(np.abs(_circulant_eigs(n, offsets)))[::-1]
    r = metrics(B)
    assert r["deg_out_mean"] == d * q and r["deg_in_mean"] == d * p
    assert r["mu0"] == pytest.approx(math.sqrt(d * q * d * p), rel=1e-12)
    assert r["mu_hat"] == pytest.approx(lam[1] * math.sqrt(p * q), rel=1e-12)
    assert r["n_components"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_sigma1_at_least_degree_mean(metrics, seed):
    """sigma1 >= sqrt(d_in d_out), with equality iff biregular (strict for these masks)."""
    rng = np.random.default_rng(seed)
    B = (rng.random((12, 17)) < 0.3).astype(float)
    B[0, :] = 1  # one high fan-in output: never biregular
    Bs, _ = ref.strip(B)
    r = metrics(B)
    assert not (np.all(Bs.sum(1) == Bs.sum(1)[0]) and np.all(Bs.sum(0) == Bs.sum(0)[0]))
    lower = math.sqrt(r["deg_in_mean"] * r["deg_out_mean"])
    assert lower == pytest.approx(B.sum() / math.sqrt(Bs.shape[0] * Bs.shape[1]), rel=1e-12)
    assert r["mu0"] > lower * (1 + 1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_adjacency_spectrum_is_pm_sigma(seed):
    """eig(A) = {+-sigma_i(B)} plus |n_out - n_in| zeros; mu_hat = third largest |eig(A)|."""
    rng = np.random.default_rng(seed)
    m, n = rng.integers(3, 9, size=2)
    B = (rng.random((m, n)) < 0.5).astype(float)
    B[0, 0] = B[1, 1] = 1
    sv = ref.singular_values(B)
    expected = np.sort(np.concatenate([sv, -sv, np.zeros(abs(m - n))]))
    assert np.allclose(np.linalg.eigvalsh(_adjacency(B)), expected, atol=1e-10)
    eigs = _abs_eigs_desc(B)
    s = _top_sv(B, k=2)
    assert s[0] == pytest.approx(eigs[0], rel=1e-10)
    assert s[1] == pytest.approx(eigs[2], rel=1e-10, abs=1e-12)


# --------------------------------------------------------------------------------------------
# convolutions: unrolled vs rolled, hand-computed
# --------------------------------------------------------------------------------------------


def _conv_case_b():
    # shape (C_out=2, C_in=3, 1, 2)
    M = np.zeros((2, 3, 1, 2))
    M[0, 0, 0] = [1, 0]
    M[0, 1, 0] = [1, 1]
    M[1, 0, 0] = [1, 0]
    M[1, 1, 0] = [0, 1]
    M[1, 2, 0] = [0, 1]
    return M


def test_conv_hand_case_unrolled(metrics):
    M = _conv_case_b()
    # columns (c, v): c0v0 c0v1 c1v0 c1v1 c2v0 c2v1; c0v1 and c2v0 are never used
    B = np.array([[1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 1]], dtype=float)
    assert np.array_equal(ref.biadjacency(M, conv="unrolled")[0], B)
    r = metrics(M, conv="unrolled")
    assert (r["n_out"], r["n_in"], r["n_edges"]) == (2, 6, 6)
    assert (r["n_out_active"], r["n_in_active"]) == (2, 4)
    assert r["density"] == pytest.approx(6 / 12)
    assert r["deg_out_mean"] == pytest.approx(3) and r["deg_in_mean"] == pytest.approx(1.5)
    assert r["n_components"] == 1
    # B B^T = [[3, 2], [2, 3]]: eigenvalues 5, 1
    assert r["mu0"] == pytest.approx(math.sqrt(5), rel=1e-12)
    assert r["mu_hat"] == pytest.approx(1.0, rel=1e-12)
    bound = math.sqrt(0.5) + math.sqrt(2)
    assert r["ramanujan_bound"] == pytest.approx(bound, rel=1e-12)
    assert r["ramanujan_gap"] == pytest.approx(bound - 1, rel=1e-12)
    assert r["is_ramanujan"] is True
    # N N^T = [[2, 1], [1, 2]] / 3: sigma2 = 1/sqrt(3)
    assert r["normalized_spectral_gap"] == pytest.approx(1 - 1 / math.sqrt(3), rel=1e-12)
    # fan-outs 2, 1, 2, 1: no group reaches d >= 3
    assert math.isnan(r["imdb_ramanujan_gap"])
    assert math.isnan(r["narc"])  # mean fan-out 1.5 < 3


def test_conv_hand_case_rolled(metrics):
    M = _conv_case_b()
    B = np.array([[1, 2, 0], [1, 1, 1]], dtype=float)  # kernel-entry multiplicities
    assert np.array_equal(ref.biadjacency(M, conv="rolled")[0], B)
    r = metrics(M, conv="rolled")
    assert (r["n_out"], r["n_in"], r["n_edges"]) == (2, 3, 6)
    assert (r["n_out_active"], r["n_in_active"]) == (2, 3)
    assert r["density"] == pytest.approx(6 / 12)
    assert r["deg_out_mean"] == pytest.approx(3) and r["deg_in_mean"] == pytest.approx(2)
    # B B^T = [[5, 3], [3, 3]]: eigenvalues 4 +- sqrt(10)
    assert r["mu0"] == pytest.approx(math.sqrt(4 + math.sqrt(10)), rel=1e-12)
    assert r["mu_hat"] == pytest.approx(math.sqrt(4 - math.sqrt(10)), rel=1e-12)
    bound = 1 + math.sqrt(2)
    assert r["ramanujan_bound"] == pytest.approx(bound, rel=1e-12)
    assert r["ramanujan_gap"] == pytest.approx(bound - math.sqrt(4 - math.sqrt(10)), rel=1e-12)
    # degrees with multiplicity: D_out = (3, 3), D_in = (2, 3, 1); N N^T = [[11, 7], [7, 11]] / 18
    assert r["normalized_spectral_gap"] == pytest.approx(1 - math.sqrt(2) / 3, rel=1e-12)


def test_conv_hand_case_weights(metrics):
    M = _conv_case_b()
    W = np.arange(1.0, 13.0).reshape(M.shape) * np.where(np.arange(12) % 2, -1, 1).reshape(M.shape)
    # |W| = 1..12 in C order; masked entries: (0,0,0,0)=1 (0,1,0,0)=3 (0,1,0,1)=4
    # (1,0,0,0)=7 (1,1,0,1)=10 (1,2,0,1)=12
    Bw_unrolled = np.array([[1, 0, 3, 4, 0, 0], [7, 0, 0, 10, 0, 12]], dtype=float)
    Bw_rolled = np.array([[1, 7, 0], [7, 10, 12]], dtype=float)
    assert np.array_equal(ref.biadjacency(M, W, "unrolled")[1], Bw_unrolled)
    assert np.array_equal(ref.biadjacency(M, W, "rolled")[1], Bw_rolled)
    for conv, Bw in (("unrolled", Bw_unrolled), ("rolled", Bw_rolled)):
        s = np.linalg.svd(Bw, compute_uv=False)
        r = metrics(M, W, conv=conv)
        assert r["weighted_mu0"] == pytest.approx(s[0], rel=1e-12), conv
        assert r["weighted_mu_hat"] == pytest.approx(s[1], rel=1e-12), conv
        assert r["weighted_spectral_gap"] == pytest.approx(s[0] - s[1], rel=1e-12), conv


def test_conv_diagonal_kernels(metrics):
    """Full 2x2 kernels on the channel diagonal: two K_{1,4} unrolled, 4*I rolled."""
    M = np.zeros((2, 2, 2, 2))
    M[0, 0] = 1
    M[1, 1] = 1
    ru = metrics(M, conv="unrolled")
    assert (ru["n_in"], ru["n_in_active"], ru["n_components"]) == (8, 8, 2)
    assert ru["mu0"] == pytest.approx(2, rel=1e-12) and ru["mu_hat"] == pytest.approx(2, rel=1e-12)
    assert ru["deg_out_mean"] == 4 and ru["deg_in_mean"] == 1
    rr = metrics(M, conv="rolled")
    assert (rr["n_in"], rr["n_in_active"], rr["n_components"]) == (2, 2, 2)
    assert rr["mu0"] == pytest.approx(4, rel=1e-12) and rr["mu_hat"] == pytest.approx(4, rel=1e-12)
    assert rr["deg_out_mean"] == 4 and rr["deg_in_mean"] == 4
    assert rr["ramanujan_gap"] == pytest.approx(2 * math.sqrt(3) - 4, rel=1e-12)
    assert rr["is_ramanujan"] is False
    assert abs(rr["normalized_spectral_gap"]) < 1e-12
    assert ru["n_edges"] == rr["n_edges"] == 8


def test_conv_same_kernel_pattern_is_rank_one_rolled(metrics):
    """Every (o, c) uses the same 2 of 4 kernel positions: rolled B = 2 * ones."""
    M = np.zeros((3, 4, 2, 2))
    M[:, :, 0, 1] = 1
    M[:, :, 1, 0] = 1
    rr = metrics(M, conv="rolled")
    assert rr["mu0"] == pytest.approx(2 * math.sqrt(12), rel=1e-12)
    assert abs(rr["mu_hat"]) < 1e-12
    ru = metrics(M, conv="unrolled")  # unrolled: K_{3,8} plus 8 isolated kernel positions
    assert (ru["n_in"], ru["n_in_active"]) == (16, 8)
    assert ru["mu0"] == pytest.approx(math.sqrt(24), rel=1e-12)
    assert abs(ru["mu_hat"]) < 1e-12
