"""The Gram matrix of a binary pattern and of its normalized matrix by counting bits: equal to
BLAS's, in both orientations, with isolated nodes, and the dense route's σ through it equal to
an SVD's and to known spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from masktopo.analysis import _bitgram
from masktopo.analysis._bitgram import gram_bits, pattern_gram
from masktopo.analysis._engine import Parts, solve_dense
from masktopo.analysis._kernels import is_normalized_pattern, normalized_values


def _parts(B: np.ndarray) -> Parts:
    return Parts.of(sp.csr_matrix(B))


def _normalized(B: np.ndarray) -> tuple[Parts, np.ndarray]:
    """The normalized matrix of pattern ``B`` as the metrics build it, and dense."""
    P = _parts(B)
    N = Parts(normalized_values(P.indptr, P.indices, P.data, *P.shape), P.indices, P.indptr,
              P.shape)  # fmt: skip
    return N, N.dense()


def _pattern(m, n, density, seed, isolated=True):
    rng = np.random.default_rng(seed)
    B = (rng.random((m, n)) < density).astype(np.float64)
    if isolated:
        B[m // 3] = 0  # an isolated row and column: degree 0 on both sides
        B[:, n // 2] = 0
    return B


@pytest.mark.parametrize("shape", [(130, 300), (300, 130), (64, 64), (1, 70), (70, 1)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.9])
def test_binary_gram_is_exact(shape, density):
    B = _pattern(*shape, density, seed=shape[0] + int(density * 100), isolated=min(shape) > 2)
    B[0, 0] = 1  # not empty
    G = gram_bits(_parts(B), normalized=False)
    A = B if shape[0] <= shape[1] else B.T
    assert G.shape == (min(shape), min(shape))
    np.testing.assert_array_equal(G, A @ A.T)  # integer counts: exact


@pytest.mark.parametrize("shape", [(130, 300), (300, 130), (257, 513), (513, 257)])
@pytest.mark.parametrize("density", [0.1, 0.5])
def test_normalized_gram_matches_blas(shape, density):
    B = _pattern(*shape, density, seed=7 + shape[0])
    P, N = _normalized(B)
    G = gram_bits(P, normalized=True)
    A = N if shape[0] <= shape[1] else N.T
    ref = A @ A.T
    np.testing.assert_allclose(G, ref, rtol=1e-13, atol=1e-15 * np.abs(ref).max())
    np.testing.assert_array_equal(G, G.T)


@pytest.fixture
def counting_always(monkeypatch):
    """Small normalized matrices take the bit route too (their many degree classes would
    otherwise keep BLAS, the cheaper way at these sizes)."""
    monkeypatch.setattr(_bitgram, "BLAS_COLUMN_COST", math.inf)


def test_only_binary_or_normalized_patterns_take_the_bit_route(counting_always):
    B = _pattern(80, 120, 0.5, seed=3)
    P = _parts(B)
    assert pattern_gram(P) is not None
    w = np.random.default_rng(0).random(P.nnz) + 0.5
    assert pattern_gram(Parts(w, P.indices, P.indptr, P.shape)) is None  # weighted
    twos = Parts(2 * P.data, P.indices, P.indptr, P.shape)  # multiplicities
    assert pattern_gram(twos) is None
    ndata = normalized_values(P.indptr, P.indices, twos.data, *P.shape)  # normalized of them
    assert pattern_gram(Parts(ndata, P.indices, P.indptr, P.shape)) is not None  # same values
    ndata = normalized_values(P.indptr, P.indices, w, *P.shape)  # of a weighted matrix
    assert not is_normalized_pattern(P.indptr, P.indices, ndata, *P.shape)
    assert pattern_gram(Parts(ndata, P.indices, P.indptr, P.shape)) is None
    exact = normalized_values(P.indptr, P.indices, P.data, *P.shape)
    assert is_normalized_pattern(P.indptr, P.indices, exact, *P.shape)
    off = exact.copy()
    off[17] = np.nextafter(off[17], 1.0)  # one ulp away: not the normalized matrix
    assert not is_normalized_pattern(P.indptr, P.indices, off, *P.shape)
    assert pattern_gram(Parts(off, P.indices, P.indptr, P.shape)) is None


def test_many_degree_classes_keep_blas(monkeypatch):
    B = _pattern(60, 400, 0.5, seed=5, isolated=False)
    P, _ = _normalized(B)
    degrees = B.sum(0)  # contraction side: the 400 columns
    classes, sizes = np.unique(degrees, return_counts=True)
    cost = ((sizes + 63) // 64).sum() + _bitgram.CLASS_COST * classes.size
    monkeypatch.setattr(_bitgram, "BLAS_COLUMN_COST", cost / 400 * 0.999)
    assert pattern_gram(P) is None
    monkeypatch.setattr(_bitgram, "BLAS_COLUMN_COST", cost / 400 * 1.001)
    assert pattern_gram(P) is not None
    assert pattern_gram(_parts(B)) is not None  # a binary pattern: one class, always counted


def test_a_llama_shaped_normalized_layer_counts_bits():
    """The real case: 4096 rows at 50 % per row keep their ~200 degree classes on the bit
    route (shape only: the pattern is built, not solved)."""
    rng = np.random.default_rng(0)
    B = sp.random(512, 4096, density=0.5, random_state=rng, format="csr")
    B.data[:] = 1.0
    degrees = np.diff(B.tocsc().indptr)
    classes = np.unique(degrees).size
    words = sum((c + 63) // 64 for c in np.unique(degrees, return_counts=True)[1])
    assert words + _bitgram.CLASS_COST * classes <= _bitgram.BLAS_COLUMN_COST * 4096


@pytest.mark.parametrize("shape", [(300, 700), (700, 300)])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_dense_route_through_the_bit_gram_agrees_with_svd(monkeypatch, counting_always, shape,
                                                         density):  # fmt: skip
    B = _pattern(*shape, density, seed=11 + int(density * 10))
    P, N = _normalized(B)
    calls = []
    real = _bitgram.pattern_gram
    monkeypatch.setattr(_bitgram, "pattern_gram", lambda P: calls.append(real(P)) or calls[-1])
    for parts, D in ((_parts(B), B), (P, N)):
        ref = np.linalg.svd(D, compute_uv=False)[:2]
        np.testing.assert_allclose(solve_dense(parts), ref, rtol=1e-9, atol=1e-12 * ref[0])
    assert len(calls) == 2 and all(G is not None for G in calls)


def test_known_spectra_through_the_bit_gram(counting_always):
    # K_{90,200}: σ₁ = √(90·200), σ₂ = 0; its normalized matrix: σ₁ = 1, σ₂ = 0
    K = np.ones((90, 200))
    np.testing.assert_allclose(solve_dense(_parts(K)), [math.sqrt(90 * 200), 0], atol=1e-9)
    np.testing.assert_allclose(solve_dense(_normalized(K)[0]), [1, 0], atol=1e-12)
    # two disjoint complete blocks K_{64,64} ∪ K_{64,32}: σ = 64, √(64·32); normalized: 1, 1
    U = np.zeros((128, 160))
    U[:64, :64] = 1
    U[64:, 64:96] = 1
    np.testing.assert_allclose(solve_dense(_parts(U)), [64, math.sqrt(64 * 32)], rtol=1e-12)
    np.testing.assert_allclose(solve_dense(_normalized(U)[0]), [1, 1], rtol=1e-12)
    # a (d_r, d_c)-biregular pattern (circulant rows): σ₁ = √(d_r d_c)
    n, d = 256, 96
    C = np.zeros((n, 2 * n))
    for i in range(n):
        C[i, (2 * i + np.arange(2 * d)) % (2 * n)] = 1  # row degree 2d, column degree d
    sv = solve_dense(_parts(C))
    ref = np.linalg.svd(C, compute_uv=False)[:2]
    assert sv[0] == pytest.approx(math.sqrt(2 * d * d), rel=1e-12)
    np.testing.assert_allclose(sv, ref, rtol=1e-9)


def test_the_engine_never_densifies_a_pattern(monkeypatch, counting_always):
    """The bit route reads the CSR arrays only: no dense copy of a pattern or of its normalized
    matrix is made; a weighted matrix is densified (the BLAS route)."""
    B = _pattern(200, 400, 0.5, seed=2)
    densified = []
    real = Parts.dense
    monkeypatch.setattr(Parts, "dense", lambda P: densified.append(P.shape) or real(P))
    P = _parts(B)
    solve_dense(P)
    solve_dense(_normalized(B)[0])
    assert densified == [(200, 400)]  # by _normalized, for the reference only
    w = np.random.default_rng(0).random(P.nnz) + 0.5
    W = Parts(w, P.indices, P.indptr, P.shape)
    np.testing.assert_allclose(solve_dense(W), np.linalg.svd(W.scipy().toarray(),
                               compute_uv=False)[:2], rtol=1e-9)  # fmt: skip
    assert densified == [(200, 400)] * 2
