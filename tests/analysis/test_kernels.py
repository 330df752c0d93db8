"""The compiled planning kernels against plain numpy/scipy, and the parallel layer split."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from masktopo import examples
from masktopo.analysis import _engine, _kernels, metrics, spectral
from masktopo.analysis._engine import Parts


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_flat_kept_equals_flatnonzero(n, density):
    m = np.random.default_rng(n).random(n) < density
    assert np.array_equal(_kernels.flat_kept(m), np.flatnonzero(m))
    conv = np.random.default_rng(1).random((16, 3, 3, 3)) < density
    assert np.array_equal(_kernels.flat_kept(conv), np.flatnonzero(conv))


def _strip_reference(pos, n_out, n_in):
    r, c = np.divmod(pos, n_in)
    rows_act = np.unique(r)
    cols_act = np.unique(c)
    rr = np.searchsorted(rows_act, r)
    cc = np.searchsorted(cols_act, c)
    A = sp.csr_matrix((np.ones(pos.size), (rr, cc)), shape=(rows_act.size, cols_act.size))
    return A, rr


@pytest.mark.parametrize("seed", range(5))
def test_strip_pattern_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n_out, n_in = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    M = rng.random((n_out, n_in)) < rng.uniform(0.02, 0.6)
    M[rng.random(n_out) < 0.3] = False  # empty rows and columns to strip
    M[:, rng.random(n_in) < 0.3] = False
    pos = np.flatnonzero(M)
    indices, indptr, n_o, n_i = _kernels.strip_pattern(pos, n_out, n_in)
    A, rr = _strip_reference(pos, n_out, n_in)
    assert (n_o, n_i) == A.shape
    rows = np.repeat(np.arange(n_o), np.diff(indptr))  # the row of every entry, from indptr
    assert np.array_equal(rows, rr) and np.array_equal(indptr, A.indptr)
    assert np.array_equal(indices, A.indices)


def _imdb_reference(A, min_group, both_three):
    """IMDB degree groups with scipy: (d, size, n_r, dense transposed submatrix)."""
    fan = np.asarray(A.sum(axis=0)).ravel()
    out = []
    for d in np.unique(fan):
        cols = np.flatnonzero(fan == d)
        if d == 0 or cols.size < min_group:
            continue
        sub = A[:, cols]
        used = np.flatnonzero(np.asarray(sub.sum(axis=1)).ravel() > 0)
        n_r = used.size
        d_out = d * cols.size / n_r
        ok = d >= 3 and (d_out >= 3 if both_three else d_out > 1)
        if ok and n_r >= 2:
            out.append((float(d), cols.size, n_r, sub[used].T.toarray()))
    return out


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("both_three", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_imdb_groups_match_scipy(seed, both_three, tall):
    """``tall``: many rows, few per group (the group's rows renumbered by a sort; otherwise
    mostly by a scan of all rows)."""
    rng = np.random.default_rng(10 + seed)
    m, n = int(rng.integers(4, 60)), int(rng.integers(4, 80))
    density = rng.uniform(0.05, 0.5)
    if tall:
        m, density = 300 + 40 * seed, 0.015
    A = sp.random(m, n, density=density, random_state=rng, format="csr")
    A.data[:] = rng.integers(1, 4, A.nnz).astype(float)  # rolled-conv multiplicities
    A = A[np.flatnonzero(np.diff(A.indptr))]  # no empty rows (as a stripped pattern)
    A.sort_indices()
    got = _kernels.imdb_groups(A.indptr.astype(np.int32), A.indices.astype(np.int32), A.data,
                               A.shape[0], A.shape[1], 3 if both_three else 2, both_three)  # fmt: skip
    d, size, n_r, indptr, indices, eid, ptr_off, nnz_off = got
    want = _imdb_reference(A, 3 if both_three else 2, both_three)
    assert len(want) == d.size
    for g, (wd, wsize, wnr, dense) in enumerate(want):
        assert (d[g], size[g], n_r[g]) == (wd, wsize, wnr)
        ip = indptr[ptr_off[g] : ptr_off[g] + wsize + 1]
        sl = slice(nnz_off[g], nnz_off[g] + ip[-1])
        sub = sp.csr_matrix((A.data[eid[sl]], indices[sl], ip), shape=(wsize, wnr)).toarray()
        assert np.array_equal(sub, dense)


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("both_three", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_position_groups_equal_strip_then_imdb_groups(seed, both_three, tall):
    """The lean ranking's grouping straight from positions (empty rows and columns left in)
    gives the groups, matrices and stripped shape of ``strip_pattern`` then ``imdb_groups``,
    and those match scipy."""
    rng = np.random.default_rng(40 + seed)
    n_out, n_in = int(rng.integers(1, 70)), int(rng.integers(1, 90))
    density = rng.uniform(0.03, 0.6)
    if tall:
        n_out, density = 400 + 30 * seed, 0.02
    M = rng.random((n_out, n_in)) < density
    M[rng.random(n_out) < 0.2] = False
    M[:, rng.random(n_in) < 0.2] = False
    pos = np.flatnonzero(M)
    rule = (3 if both_three else 2, both_three)
    indices, indptr, n_o, n_i = _kernels.strip_pattern(pos, n_out, n_in)
    want = _kernels.imdb_groups(indptr, indices, np.ones(pos.size), n_o, n_i, *rule)
    got = _kernels.position_groups(pos, n_out, n_in, *rule)
    assert (got[0], got[1]) == (n_o, n_i)
    for a, b in zip([want[i] for i in (0, 1, 2, 3, 4, 6, 7)], got[2:], strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    ref = _imdb_reference(_strip_reference(pos, n_out, n_in)[0], *rule) if pos.size else []
    assert len(ref) == got[2].size
    empty = _kernels.position_groups(np.zeros(0, dtype=np.int64), 5, 7, *rule)
    assert empty[:2] == (0, 0) and empty[2].size == 0


@pytest.mark.parametrize("seed", range(6))
def test_count_components_matches_scipy(seed):
    """Union–find components of random bipartite patterns (several components, isolated
    nodes, an empty one) against scipy's weakly connected components of the same graph."""
    rng = np.random.default_rng(seed)
    m, n = rng.integers(1, 60, 2)
    B = rng.random((m, n)) < rng.choice([0.0, 0.01, 0.05, 0.3])
    if seed % 2:  # block structure: at least two components when both blocks have edges
        B[: m // 2, n // 2 :] = False
        B[m // 2 :, : n // 2] = False
    A = sp.csr_matrix(B.astype(np.float64))
    adj = sp.bmat([[None, A], [A.T, None]], format="csr") if A.nnz else sp.csr_matrix((m + n,) * 2)
    ref = sp.csgraph.connected_components(adj, directed=False)[0]
    got = _kernels.count_components(A.indptr, A.indices.astype(np.int32), m, n)
    assert got == ref


@pytest.mark.parametrize("seed", range(4))
def test_normalized_values_are_the_numpy_bits(seed):
    rng = np.random.default_rng(seed)
    B = sp.random(70, 40, density=0.2, random_state=seed, format="csr")
    B.data = rng.integers(1, 4, B.nnz).astype(np.float64) if seed % 2 else rng.random(B.nnz)
    rows = np.repeat(np.arange(70), np.diff(B.indptr))
    rs = np.bincount(rows, weights=B.data, minlength=70)
    cs = np.bincount(B.indices, weights=B.data, minlength=40)
    ref = B.data / np.sqrt(rs[rows] * cs[B.indices])
    keep = (rs[rows] > 0) & (cs[B.indices] > 0)
    got = _kernels.normalized_values(B.indptr, B.indices, B.data, 70, 40)
    assert np.array_equal(got[keep], ref[keep])  # bit for bit


def test_cost_model_orders_matrices_sensibly():
    small = Parts.of(np.ones((5, 40)))
    big = Parts.of(sp.random(300, 3000, density=0.01, random_state=0, format="csr"))
    binary = Parts(np.ones(big.nnz), big.indices, big.indptr, big.shape)
    assert 0 < _engine.cost(small) < _engine.cost(big) < _engine.cost(binary)


def _resnet_layers(seed):
    shapes = examples.resnet18_cifar_shapes()
    ms = examples.random_maskset(shapes, 0.01, distribution="erk", weights=False, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return [(n, ms[n], torch.randn(shapes[n], generator=g)) for n in ms]


@pytest.mark.parametrize("workers", ["2", "3", "5"])
def test_parallel_layer_split_is_bit_identical_to_serial(monkeypatch, workers):
    layers = _resnet_layers(3) + _resnet_layers(4)
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    serial = metrics.layer_metric_rows(layers)
    monkeypatch.setenv("MASKTOPO_WORKERS", workers)
    monkeypatch.setattr(spectral, "_PARALLEL_MIN_NNZ", 0)
    assert spectral.use_workers(1)
    parallel = metrics.layer_metric_rows(layers)
    assert spectral._POOL is not None  # the worker threads ran parts of the layers
    assert len(serial) == len(parallel) == len(layers)
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            same = a[k] == b[k] or (isinstance(a[k], float) and np.isnan(a[k]) and np.isnan(b[k]))
            assert same, (k, a[k], b[k])


def test_pack_mixes_parts_and_blocks():
    rng = np.random.default_rng(5)
    mats = [sp.random(int(rng.integers(2, 30)), int(rng.integers(2, 30)), density=0.3,
                      random_state=rng, format="csr") for _ in range(5)]  # fmt: skip
    parts = [Parts.of(M) for M in mats]
    inner = _kernels.pack(parts[1:4])  # three matrices as one block
    items = [parts[0], _kernels.Block(*inner[:6]), parts[4]]
    packed = _kernels.pack(items)
    assert packed[5].shape == (5, 2)
    for i, P in enumerate(parts):
        data, indices, indptr, shape = _kernels.unpack(packed, i)
        got = sp.csr_matrix((data, indices, indptr), shape=shape).toarray()
        assert np.array_equal(got, P.dense())
    assert np.array_equal(_engine.solve_top2(items), _engine.solve_top2(parts))


def test_device_path_expands_blocks_like_the_in_process_path(monkeypatch):
    """The device route (``solve_many`` one matrix per job) gets the IMDB blocks unpacked; run it
    on the CPU so that it can be compared with the in-process kernel route."""
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    layers = _resnet_layers(7)[:6]
    opts = metrics.Options()
    names = metrics.resolve_metrics(None, weighted=True)
    groups = metrics._groups_for(names)
    raws = [metrics._extract(n, m, w, opts) for n, m, w in layers]
    plans = [metrics._plan_layer(r, opts, groups) for r in raws]
    assert any(isinstance(j, _kernels.Block) for p in plans for j in p.jobs)
    here = metrics._rows(raws, opts, names, groups, True)
    device = metrics._rows(raws, opts, names, groups, True, torch.device("cpu"))
    for a, b in zip(here, device, strict=True):
        for k in ("mu_hat", "weighted_mu_hat", "imdb_ramanujan_gap", "imdb_weighted_gap"):
            assert a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])), k


def _csr(rng, m, n, density):
    M = rng.random((m, n)) < density
    M[np.arange(m), rng.integers(0, n, m)] = True  # no empty row
    A = sp.csr_matrix(M.astype(np.float64))
    return A.indices.astype(np.int32), A.indptr.astype(np.int64), A.nnz


@pytest.mark.parametrize("rows_side", [True, False])
def test_apply_pair_equals_two_applies_bit_for_bit(rows_side):
    rng = np.random.default_rng(3)
    m, n = (40, 90) if rows_side else (90, 40)
    indices, indptr, nnz = _csr(rng, m, n, 0.1)
    w = rng.random(nnz)
    dim, other = (m, n) if rows_side else (n, m)
    x0, x1 = rng.standard_normal(dim), rng.standard_normal(dim)
    a0, a1, b0, b1 = (np.empty(dim) for _ in range(4))
    t = np.empty((2, other))
    _kernels._apply(np.ones(nnz), indices, indptr, 0, m, n, rows_side, x0, t[0], a0, True)
    _kernels._apply(w, indices, indptr, 0, m, n, rows_side, x1, t[1], a1, False)
    _kernels._apply_pair(w, indices, indptr, 0, m, n, rows_side, x0, x1, t[0], t[1], b0, b1)
    assert np.array_equal(a0, b0) and np.array_equal(a1, b1)
    assert not np.array_equal(a0, a1)  # the lanes are not the same operator


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize(
    ("m", "n", "steps"),
    [(120, 300, (16, 8)), (300, 120, (8, 16)), (200, 200, (40, 40)), (10, 50, (16, 8))],
)
def test_paired_lanczos_lanes_equal_single_runs(m, n, steps, upper):
    """The binary and weighted matrix of one pattern bounded side by side (one traversal per
    product while both run) give each the same bits as alone, whatever their step budgets."""
    rng = np.random.default_rng(m + n)
    indices, indptr, nnz = _csr(rng, m, n, 0.05)
    ones, w = np.ones(nnz), rng.random(nnz)
    table = _kernels._gaussians(max(m, n))
    lo, hi = np.zeros((2, 2, 2)), np.zeros((2, 2, 2))
    K = _kernels._bounds_lanes(ones, w, 2, indices, indptr, 0, m, n, 1e-6, np.array(steps), 16,
                               lo[0], hi[0], table, upper)  # fmt: skip
    for lane, values in enumerate((ones, w)):
        k = _kernels._bounds_one(values, indices, indptr, 0, m, n, 1e-6, steps[lane], 16,
                                 lo[1, lane], hi[1, lane], table, upper)  # fmt: skip
        assert k == K[lane]
    assert np.array_equal(lo[0], lo[1]) and np.array_equal(hi[0], hi[1])
    assert np.all(lo[0] <= hi[0]) and lo[0, 0, 0] != lo[0, 1, 0]
    # a weighted lane that is binary too, and a valued lane 0 (no shared traversal): same bits
    for a, b in ((ones, ones), (w, ones)):
        _kernels._bounds_lanes(a, b, 2, indices, indptr, 0, m, n, 1e-6, np.array(steps), 16,
                               lo[0], hi[0], table, upper)  # fmt: skip
        for lane, values in enumerate((a, b)):
            _kernels._bounds_one(values, indices, indptr, 0, m, n, 1e-6, steps[lane], 16,
                                 lo[1, lane], hi[1, lane], table, upper)  # fmt: skip
        assert np.array_equal(lo[0], lo[1]) and np.array_equal(hi[0], hi[1])


def test_pack_pairs_a_layers_binary_and_weighted_matrices_and_keeps_the_bits():
    """Planning queues a layer's binary and weighted matrix (and IMDB blocks) one after the
    other; pack marks them as partners, and solving them side by side (one traversal for both
    products) gives the same bits as solving each alone."""
    layers = _resnet_layers(3)
    opts = metrics.Options()
    selection = metrics.select(metrics.metric_names())
    jobs = []
    for name, mask, weight in layers:
        raw = metrics._extract(name, mask, weight, opts)
        jobs.extend(metrics._plan_layer(raw, opts, selection).jobs)
    packed = _kernels.pack(jobs)
    partner = packed[6]
    paired = np.flatnonzero(partner >= 0)
    assert paired.size > len(layers)  # the whole matrices and the IMDB groups
    for i in paired:  # a partner has the same pattern and other values
        a, b = _kernels.unpack(packed, i), _kernels.unpack(packed, partner[i])
        assert a[3] == b[3] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert not np.array_equal(a[0], b[0])
    args = (_engine.TOL, _engine.MAX_STEPS, _engine.DENSE_MAX_SIDE)
    together = _kernels.top2_batch(*packed, *args)
    alone = _kernels.top2_batch(*packed[:6], np.zeros(0, np.int64), *args)
    for x, y in zip(together, alone, strict=True):
        assert np.array_equal(x, y)
    bounds = [_kernels.top2_bounds_batch(*packed[:6], p, 1e-6, 12, _engine.DENSE_MAX_SIDE, False)
              for p in (partner, np.zeros(0, np.int64))]  # fmt: skip
    for x, y in zip(*bounds, strict=True):
        assert np.array_equal(x, y)


def _small_cases(rng):
    """Small matrices (smaller side ≤ 24) with known hard spectra: doubled and tripled top
    singular values (identical disconnected blocks), σ₂ = 0 (complete bipartite, identical rows),
    weighted and integer values, both orientations."""
    cases = [np.ones((5, 9)), np.ones((24, 3)), np.kron(np.eye(2), np.ones((3, 4))),
             np.repeat(np.eye(6), [1, 1, 2, 1, 1, 2], axis=0),  # Gram diag(1, 1, 2, 1, 1, 2)
             np.repeat(np.eye(5), [3, 1, 3, 3, 2], axis=0).T]  # fmt: skip
    for _ in range(300):
        m, n = int(rng.integers(2, 25)), int(rng.integers(2, 60))
        B = (rng.random((m, n)) < rng.uniform(0.05, 0.9)).astype(np.float64)
        kind = int(rng.integers(0, 6))
        if kind == 1:
            B *= rng.random((m, n))
        elif kind == 2:
            B *= rng.integers(1, 4, (m, n))
        elif kind == 3:
            B = np.kron(np.eye(2 + int(rng.integers(0, 2))), B[: max(1, m // 3), : max(1, n // 3)])
        elif kind == 4:
            B[:] = B[0]
        if rng.random() < 0.5:
            B = B.T
        cases.append(B)
    for B in cases:
        B = B[np.abs(B).sum(1) > 0][:, np.abs(B).sum(0) > 0]
        if 2 <= min(B.shape) <= 24:
            yield B


def test_small_dense_route_matches_svd_with_multiplicities():
    """The small matrices' route (sparse Gram, Householder tridiagonalization, Newton and
    inverse iteration, Rayleigh–Ritz: no LAPACK) against numpy's SVD, including a doubled top
    value (where inverse iteration from one start vector would find one copy only)."""
    rng = np.random.default_rng(7)
    out = np.empty(2)
    count = 0
    for B in _small_cases(rng):
        A = sp.csr_matrix(B)
        m, n = A.shape
        _kernels._dense_small(A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32), 0,
                              m, n, m <= n, min(m, n), out)  # fmt: skip
        ref = np.linalg.svd(B, compute_uv=False)[:2]
        assert np.abs(out - ref).max() <= 1e-13 * ref[0], (B.shape, out, ref)
        count += 1
    assert count > 250
    # A repeated index in a row adds up, as in a dense copy (both orientations).
    indptr = np.array([0, 3, 5, 6], dtype=np.int32)
    indices = np.array([0, 2, 0, 1, 1, 3], dtype=np.int32)
    data = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 4.0])
    B = np.zeros((3, 4))
    np.add.at(B, (np.repeat(np.arange(3), np.diff(indptr)), indices), data)
    ref = np.linalg.svd(B, compute_uv=False)[:2]
    for rows_side, dim in ((True, 3), (False, 4)):
        _kernels._dense_small(data, indices, indptr, 0, 3, 4, rows_side, dim, out)
        assert np.allclose(out, ref, rtol=0, atol=1e-13 * ref[0])


def test_two_by_two_singular_values_in_closed_form():
    rng = np.random.default_rng(3)
    out = np.empty(2)
    cases = [(1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 3.0, 0.0), (0.0, 3.0, 4.0), (3.0, 0.0, 4.0),
             (5.0, 0.0, 5.0), (2.0, 1e-20, 2.0), (1e-200, 1.0, 1e-200), (1.0, 1.0, 1e-17)]  # fmt: skip
    cases += [tuple(np.abs(rng.standard_normal(3)) * 10.0 ** rng.integers(-8, 8, 3))
              for _ in range(2000)]  # fmt: skip
    for f, g, h in cases:
        _kernels._sv_upper2(f, g, h, out)
        ref = np.linalg.svd(np.array([[f, g], [0.0, h]]), compute_uv=False)
        assert out[0] >= out[1] >= 0.0
        # each value to a few ulps of itself (relative accuracy, also for a tiny σ₂)
        assert np.all(np.abs(out - ref) <= 4e-16 * ref + 1e-300), (f, g, h, out, ref)
    _kernels._sv_upper2(1.0, 1e300, 1.0, out)  # σ₂ = |f h| / σ₁ = 1e-300, kept (no underflow)
    assert out[0] == 1e300 and out[1] == pytest.approx(1e-300, rel=1e-15)


@pytest.mark.parametrize("seed", range(3))
def test_a_resumed_lanczos_run_has_the_single_runs_recurrence(seed):
    """``_lanczos_run`` stopped at a budget and resumed with a larger one computes the
    recurrence (α, β, basis) of one run with the larger budget, bit for bit, and ends at the
    same step; its Ritz vectors give the same σ to rounding (only the convergence checks
    differ)."""
    rng = np.random.default_rng(seed)
    m, n = 60, 150
    M = rng.random((m, n)) < 0.06
    M[np.arange(m), rng.integers(0, n, m)] = True  # no empty row
    A = sp.csr_matrix(M.astype(np.float64))
    data, indices, indptr = A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32)
    start = _kernels._gaussians(m)
    runs = {}
    for budgets in ((20,), (7, 20), (4, 9, 20)):
        Q, state = _kernels._lanczos_start(1, m, n, 20, np.array([budgets[0]]), start)
        for b in budgets:
            Q = _kernels._lanczos_run(Q, state, data, data, 1, indices, indptr, 0, m, n, True, m,
                                      1e-12, np.array([b]))  # fmt: skip
        Y = np.empty((2, 1, m))
        _kernels._lanczos_vectors(Q, state, 1, m, Y[0], Y[1])
        runs[budgets] = (Q, state, Y)
    Q0, s0, Y0 = runs[(20,)]
    k = int(s0[_kernels._STEPS][0])
    assert k == 20 and not s0[_kernels._OK][0]  # stopped at the budget, not converged
    for budgets in ((7, 20), (4, 9, 20)):
        Q, state, Y = runs[budgets]
        assert int(state[_kernels._STEPS][0]) == k
        for a, b in ((state[2], s0[2]), (state[3], s0[3]), (Q[:, :k], Q0[:, :k])):  # α, β
            assert np.array_equal(a, b)
        sv = [np.linalg.svd(A.T @ np.linalg.qr(y[:, 0, :].T)[0], compute_uv=False)
              for y in (Y, Y0)]  # fmt: skip
        np.testing.assert_allclose(sv[0], sv[1], rtol=1e-12)
