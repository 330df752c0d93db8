r"""Compiled (numba) kernels: σ₁, σ₂ of many sparse matrices in one call, exact in float64.

:func:`top2_batch` takes many CSR matrices concatenated into flat arrays and returns the two
largest singular values of each, one matrix after the other, with no Python in the loop. It is the
CPU engine behind :func:`masktopo.analysis.spectral.solve_many` (and so behind PAGS scoring,
where one chunk of candidates brings thousands of matrices).

Per matrix, on the Gram operator ``G`` of its smaller side (``BBᵀ`` or ``BᵀB``, applied as two
sparse passes over the CSR arrays, never formed):

* smaller side ``s ≤ small_side``: the dense ``s × s`` Gram matrix, LAPACK ``eigh``, and a
  Rayleigh–Ritz step on its top two eigenvectors;
* otherwise two Lanczos phases without full reorthogonalization [P71]_ [GV13]_:

  1. the largest eigenvalue ``σ₁²`` from a positive start vector (it overlaps the Perron vector of
     a non-negative matrix), stopped when the residual bound ``β_k |s_k|`` of the top Ritz pair
     is at most ``tol·θ₁``; its Ritz vector ``v``;
  2. the largest eigenvalue of the deflated operator ``(I − vvᵀ) G (I − vvᵀ)``, which is
     ``σ₂²``, from a seeded random start orthogonal to ``v``, with the same stopping rule; its
     Ritz vector ``u``.

  Plain Lanczos loses orthogonality only in the direction of converged Ritz vectors (Paige), so an
  extreme eigenvalue converges as in exact arithmetic and each phase stops when its one wanted
  value has converged, before a spurious copy can form. A repeated ``σ₁`` (a disconnected graph
  with two equal top components) is found twice: the second phase starts outside ``span(v)``.
  So no connected-component split is needed.

* finally a Rayleigh–Ritz step on ``W = orth([v, u])``: the σ are the singular values of
  ``BᵀW`` (or ``BW``) by a two-column QR and a 2×2 SVD, which keeps small σ exact to about
  ``ε·σ₁`` (``sqrt`` of the Gram Ritz values would not, e.g. ``σ₂ = 0`` of a complete bipartite
  graph).

The Ritz pair of the tridiagonal ``T_k`` at each convergence check comes from bisection on Sturm
counts [GV13]_ (§8.4) and one or two steps of inverse iteration, both ``O(k)`` per step, so checks
are cheap enough to run every other Lanczos step. Every matrix's start vectors depend only on that
matrix, so a result does not depend on which other matrices share the call. A matrix that does not
converge within ``max_steps`` is flagged; the caller solves it another way.

References
----------
.. [P71] C. C. Paige, "The computation of eigenvalues and eigenvectors of very large sparse
   matrices", PhD thesis, University of London, 1971.
.. [GV13] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., Johns Hopkins, 2013,
   §10.1–10.3 (Lanczos), §8.4 (tridiagonal bisection and inverse iteration).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EPS = np.finfo(np.float64).eps
_SEED = 0x5EED


@njit(cache=True)
def _uniform(i, salt):
    """A uniform number in [0, 1) from index ``i`` (splitmix64 of ``i`` and ``salt``): start
    vectors are a pure function of the position, with no generator state."""
    x = np.uint64(i) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return float(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _apply(data, indices, indptr, e0, m, n, rows_side, x, tmp, out):
    """``out = B Bᵀ x`` (``rows_side``: the operator lives on the rows) or ``Bᵀ B x``."""
    if rows_side:  # x, out: length m; tmp: length n
        for c in range(n):
            tmp[c] = 0.0
        for r in range(m):
            xr = x[r]
            for p in range(indptr[r], indptr[r + 1]):
                tmp[indices[e0 + p]] += data[e0 + p] * xr
        for r in range(m):
            acc = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                acc += data[e0 + p] * tmp[indices[e0 + p]]
            out[r] = acc
    else:  # x, out: length n; tmp: length m
        for c in range(n):
            out[c] = 0.0
        for r in range(m):
            acc = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                acc += data[e0 + p] * x[indices[e0 + p]]
            tmp[r] = acc
        for r in range(m):
            tr = tmp[r]
            for p in range(indptr[r], indptr[r + 1]):
                out[indices[e0 + p]] += data[e0 + p] * tr


@njit(cache=True)
def _sturm_below(alpha, beta, k, x):
    """How many eigenvalues of the ``k × k`` tridiagonal ``T`` are below ``x``."""
    count = 0
    d = 1.0
    for j in range(k):
        b2 = beta[j - 1] * beta[j - 1] if j > 0 else 0.0
        d = alpha[j] - x - (b2 / d if j > 0 else 0.0)
        if d == 0.0:
            d = -1e-300
        if d < 0.0:
            count += 1
    return count


@njit(cache=True)
def _top_eig(alpha, beta, k, lo_hint):
    """Largest eigenvalue of the ``k × k`` symmetric tridiagonal (diagonal ``alpha``,
    off-diagonal ``beta``) by bisection, to a few ulps."""
    lo = np.inf
    hi = -np.inf
    for j in range(k):
        r = (abs(beta[j - 1]) if j > 0 else 0.0) + (abs(beta[j]) if j < k - 1 else 0.0)
        lo = min(lo, alpha[j] - r)
        hi = max(hi, alpha[j] + r)
    if lo_hint > lo and _sturm_below(alpha, beta, k, lo_hint) < k:
        lo = lo_hint  # the top Ritz value only grows with k
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi or hi - lo <= 4.0 * _EPS * max(abs(lo), abs(hi)):
            break
        if _sturm_below(alpha, beta, k, mid) == k:
            hi = mid
        else:
            lo = mid
    return hi


@njit(cache=True)
def _tri_solve(alpha, beta, k, shift, rhs):
    """Solve ``(T − shift·I) x = rhs`` by Gaussian elimination with partial pivoting
    (LAPACK ``dgtsv``'s scheme), in place in ``rhs``; singular pivots are nudged."""
    d = np.empty(k)
    du = np.zeros(k)
    du2 = np.zeros(k)
    dl = np.zeros(k)
    for j in range(k):
        d[j] = alpha[j] - shift
    for j in range(k - 1):
        du[j] = beta[j]
        dl[j] = beta[j]
    tiny = _EPS * (np.abs(d).max() + 2.0 * np.abs(du).max() + 1e-300)
    for j in range(k - 1):
        if abs(d[j]) >= abs(dl[j]):
            if d[j] == 0.0:
                d[j] = tiny
            f = dl[j] / d[j]
            d[j + 1] -= f * du[j]
            rhs[j + 1] -= f * rhs[j]
        else:  # swap rows j and j+1
            f = d[j] / dl[j]
            d[j] = dl[j]
            t = d[j + 1]
            d[j + 1] = du[j] - f * t
            du[j] = t
            if j < k - 2:
                du2[j] = du[j + 1]
                du[j + 1] = -f * du2[j]
            t = rhs[j]
            rhs[j] = rhs[j + 1]
            rhs[j + 1] = t - f * rhs[j + 1]
    if d[k - 1] == 0.0:
        d[k - 1] = tiny
    rhs[k - 1] /= d[k - 1]
    if k > 1:
        if d[k - 2] == 0.0:
            d[k - 2] = tiny
        rhs[k - 2] = (rhs[k - 2] - du[k - 2] * rhs[k - 1]) / d[k - 2]
    for j in range(k - 3, -1, -1):
        if d[j] == 0.0:
            d[j] = tiny
        rhs[j] = (rhs[j] - du[j] * rhs[j + 1] - du2[j] * rhs[j + 2]) / d[j]


@njit(cache=True)
def _top_pair(alpha, beta, k, lo_hint, s):
    """Top eigenpair of ``T_k``: returns θ and writes the unit eigenvector into ``s[:k]``."""
    theta = _top_eig(alpha, beta, k, lo_hint)
    if k == 1:
        s[0] = 1.0
        return theta
    for j in range(k):
        s[j] = 1.0
    for _ in range(3):  # inverse iteration; θ is accurate, so one step nearly suffices
        _tri_solve(alpha, beta, k, theta, s)
        nrm = 0.0
        for j in range(k):
            nrm += s[j] * s[j]
        nrm = np.sqrt(nrm)
        if not np.isfinite(nrm) or nrm == 0.0:
            for j in range(k):
                s[j] = 1.0
            continue
        for j in range(k):
            s[j] /= nrm
    return theta


@njit(cache=True)
def _dot(a, b, n):
    acc = 0.0
    for i in range(n):
        acc += a[i] * b[i]
    return acc


@njit(cache=True)
def _lanczos(data, indices, indptr, e0, m, n, rows_side, dim, start, v, deflate, scale,
             tol, max_steps, Q, tmp, z, y):  # fmt: skip
    """Largest eigenvalue θ of ``G`` (or of ``(I − vvᵀ)G(I − vvᵀ)`` with ``deflate``) by plain
    Lanczos from ``start``; writes its Ritz vector into ``y``. ``scale`` sets the absolute
    tolerance (``tol·scale``; 0 means ``θ`` itself). Returns ``(θ, converged)``."""
    alpha = np.zeros(max_steps + 1)
    beta = np.zeros(max_steps + 1)
    s = np.zeros(max_steps + 1)
    q = Q[0]
    for i in range(dim):
        q[i] = start[i]
    if deflate:
        c = _dot(v, q, dim)
        for i in range(dim):
            q[i] -= c * v[i]
    nrm = np.sqrt(_dot(q, q, dim))
    for i in range(dim):
        q[i] /= nrm
    theta = 0.0
    tnorm = 0.0
    k_done = 0
    ok = False
    for k in range(max_steps):
        q = Q[k]
        _apply(data, indices, indptr, e0, m, n, rows_side, q, tmp, z)
        if deflate:
            c = _dot(v, z, dim)
            for i in range(dim):
                z[i] -= c * v[i]
        a = _dot(q, z, dim)
        if k > 0:
            qp = Q[k - 1]
            b = beta[k - 1]
            for i in range(dim):
                z[i] -= a * q[i] + b * qp[i]
        else:
            for i in range(dim):
                z[i] -= a * q[i]
        # Local reorthogonalization against q (and v): cheap, and keeps α accurate.
        c = _dot(q, z, dim)
        for i in range(dim):
            z[i] -= c * q[i]
        a += c
        if deflate:
            c = _dot(v, z, dim)
            for i in range(dim):
                z[i] -= c * v[i]
        alpha[k] = a
        b = np.sqrt(_dot(z, z, dim))
        beta[k] = b
        K = k + 1
        tnorm = max(tnorm, abs(a), b)
        broke = b <= 64.0 * _EPS * max(tnorm, 1e-300) or K >= dim
        if broke or K % 4 == 0 or K == max_steps:
            theta = _top_pair(alpha, beta, K, theta, s)
            ref = scale if scale > 0.0 else abs(theta)
            if broke or b * abs(s[K - 1]) <= tol * max(ref, 1e-300):
                k_done = K
                ok = True
                break
            if K == max_steps:
                k_done = K
                break
        qn = Q[K]
        for i in range(dim):
            qn[i] = z[i] / b
    for i in range(dim):
        y[i] = 0.0
    for j in range(k_done):
        sj = s[j]
        qj = Q[j]
        for i in range(dim):
            y[i] += sj * qj[i]
    nrm = np.sqrt(_dot(y, y, dim))
    if nrm > 0.0:
        for i in range(dim):
            y[i] /= nrm
    return theta, ok, k_done


@njit(cache=True)
def _sv_rows2(Y, n, out):
    """Singular values of the ``2 × n`` matrix ``Y`` (rows overwritten): a two-row QR by
    classical Gram–Schmidt with one reorthogonalization, then the SVD of the 2×2 ``R``."""
    r11 = np.sqrt(_dot(Y[0], Y[0], n))
    if r11 > 0.0:
        for i in range(n):
            Y[0, i] /= r11
    r12 = 0.0
    for _ in range(2):
        c = _dot(Y[0], Y[1], n)
        for i in range(n):
            Y[1, i] -= c * Y[0, i]
        r12 += c
    R = np.zeros((2, 2))
    R[0, 0] = r11
    R[0, 1] = r12
    R[1, 1] = np.sqrt(_dot(Y[1], Y[1], n))
    sv = np.linalg.svd(R)[1]
    out[0] = sv[0]
    out[1] = sv[1]


@njit(cache=True)
def _ritz2(data, indices, indptr, e0, m, n, rows_side, dim, v, u, out):
    """σ of ``B`` on ``W = orth([v, u])``: singular values of ``BᵀW`` (``BW``), descending."""
    # Orthonormalize u against v (twice: classical Gram–Schmidt with one reorthogonalization).
    for _ in range(2):
        c = _dot(v, u, dim)
        for i in range(dim):
            u[i] -= c * v[i]
    nu = np.sqrt(_dot(u, u, dim))
    other = n if rows_side else m
    Y = np.zeros((2, other))
    if rows_side:
        for r in range(m):
            for p in range(indptr[r], indptr[r + 1]):
                col = indices[e0 + p]
                Y[0, col] += data[e0 + p] * v[r]
                Y[1, col] += data[e0 + p] * u[r]
    else:
        for r in range(m):
            a0 = 0.0
            a1 = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                col = indices[e0 + p]
                a0 += data[e0 + p] * v[col]
                a1 += data[e0 + p] * u[col]
            Y[0, r] = a0
            Y[1, r] = a1
    if nu > 0.0:
        for i in range(other):
            Y[1, i] /= nu
    else:
        for i in range(other):
            Y[1, i] = 0.0
    _sv_rows2(Y, other, out)


@njit(cache=True)
def _dense_small(data, indices, indptr, e0, m, n, rows_side, dim, out):
    """σ₁, σ₂ through the dense ``dim × dim`` Gram matrix, LAPACK ``eigh`` and Rayleigh–Ritz."""
    other = n if rows_side else m
    X = np.zeros((dim, other))  # rows = the smaller side
    for r in range(m):
        for p in range(indptr[r], indptr[r + 1]):
            col = indices[e0 + p]
            if rows_side:
                X[r, col] += data[e0 + p]
            else:
                X[col, r] += data[e0 + p]
    G = X @ X.T
    _, V = np.linalg.eigh(G)
    Y = np.zeros((2, other))
    for j in range(min(2, dim)):
        Y[j] = X.T @ V[:, dim - 1 - j].copy()
    _sv_rows2(Y, other, out)


@njit(cache=True)
def top2_batch(data, indices, indptr, ptr_off, nnz_off, shapes, tol, max_steps, small_side):
    """σ₁, σ₂ of every matrix ``i``: CSR ``indptr[ptr_off[i] : ptr_off[i] + m + 1]`` (local, from
    0), ``indices``/``data`` from ``nnz_off[i]``, shape ``shapes[i] = (m, n)``.

    Returns ``(out, ok, steps)``: ``(nb, 2)`` float64 descending; ``ok[i] = False`` where a
    Lanczos phase did not converge within ``max_steps``; ``(nb, 2)`` Lanczos steps of the two
    phases (0 for the dense route).
    """
    nb = shapes.shape[0]
    out = np.zeros((nb, 2))
    ok = np.ones(nb, dtype=np.bool_)
    steps_out = np.zeros((nb, 2), dtype=np.int64)
    for i in range(nb):
        m = shapes[i, 0]
        n = shapes[i, 1]
        e0 = nnz_off[i]
        ip = indptr[ptr_off[i] : ptr_off[i] + m + 1]
        if m == 0 or n == 0 or ip[m] == 0:
            continue
        rows_side = m <= n
        dim = m if rows_side else n
        if dim <= small_side:
            _dense_small(data, indices, ip, e0, m, n, rows_side, dim, out[i])
            continue
        steps = min(max_steps, dim)
        other = n if rows_side else m
        Q = np.empty((steps + 1, dim))
        tmp = np.empty(other)
        z = np.empty(dim)
        v = np.empty(dim)
        u = np.empty(dim)
        start = np.empty(dim)
        # Start vectors depend only on the position: a result does not depend on the batch.
        for j in range(dim):
            start[j] = 0.5 + _uniform(j, _SEED)  # positive: overlaps the Perron vector
        t1, ok1, k1 = _lanczos(data, indices, ip, e0, m, n, rows_side, dim, start, v, False, 0.0,
                           tol, steps, Q, tmp, z, v)  # fmt: skip
        for j in range(dim):  # Box–Muller: a Gaussian direction for the deflated phase
            u1 = 1.0 - _uniform(2 * j, _SEED + 1)
            start[j] = np.sqrt(-2.0 * np.log(u1)) * np.cos(
                2.0 * np.pi * _uniform(2 * j + 1, _SEED + 1)
            )
        _, ok2, k2 = _lanczos(data, indices, ip, e0, m, n, rows_side, dim, start, v, True, t1,
                          tol, steps, Q, tmp, z, u)  # fmt: skip
        ok[i] = ok1 and ok2
        steps_out[i, 0] = k1
        steps_out[i, 1] = k2
        _ritz2(data, indices, ip, e0, m, n, rows_side, dim, v, u, out[i])
    return out, ok, steps_out


def pack(mats):
    """Concatenate :class:`~masktopo.analysis._engine.Parts` into :func:`top2_batch`'s arrays."""
    nb = len(mats)
    shapes = np.array([P.shape for P in mats], dtype=np.int64).reshape(nb, 2)
    nnz = np.array([P.nnz for P in mats], dtype=np.int64)
    nnz_off = np.zeros(nb, dtype=np.int64)
    np.cumsum(nnz[:-1], out=nnz_off[1:])
    ptr_off = np.zeros(nb, dtype=np.int64)
    np.cumsum(shapes[:-1, 0] + 1, out=ptr_off[1:])
    if nb:
        data = np.concatenate([np.asarray(P.data[: P.nnz], dtype=np.float64) for P in mats])
        indices = np.concatenate([np.asarray(P.indices[: P.nnz], dtype=np.int32) for P in mats])
        indptr = np.concatenate([np.asarray(P.indptr, dtype=np.int64) for P in mats])
    else:
        data, indices, indptr = np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int64)
    return data, indices, indptr, ptr_off, nnz_off, shapes


# --------------------------------------------------------------------------------------------
# Layer planning: stripped CSR pattern and IMDB degree groups (masktopo.analysis.metrics)
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def strip_pattern(flat, n_out, n_in):
    """Stripped CSR of the entries ``flat`` (ascending row-major positions in ``n_out × n_in``).

    Rows and columns without an entry are dropped and the rest renumbered in order. Returns
    ``(rows, indices, indptr, n_rows, n_cols)``: int32 row and column of every entry, int32
    ``indptr`` and the stripped shape.
    """
    E = flat.size
    row_deg = np.zeros(n_out, dtype=np.int64)
    col_deg = np.zeros(n_in, dtype=np.int64)
    for e in range(E):
        row_deg[flat[e] // n_in] += 1
        col_deg[flat[e] % n_in] += 1
    row_new = np.empty(n_out, dtype=np.int64)
    n_o = 0
    for i in range(n_out):
        row_new[i] = n_o
        if row_deg[i] > 0:
            n_o += 1
    col_new = np.empty(n_in, dtype=np.int64)
    n_i = 0
    for j in range(n_in):
        col_new[j] = n_i
        if col_deg[j] > 0:
            n_i += 1
    rows = np.empty(E, dtype=np.int32)
    indices = np.empty(E, dtype=np.int32)
    indptr = np.zeros(n_o + 1, dtype=np.int32)
    for e in range(E):
        r = row_new[flat[e] // n_in]
        rows[e] = r
        indices[e] = col_new[flat[e] % n_in]
        indptr[r + 1] += 1
    for i in range(n_o):
        indptr[i + 1] += indptr[i]
    return rows, indices, indptr, n_o, n_i


@njit(cache=True)
def imdb_groups(indptr, indices, data, n_rows, n_cols, min_group, both_three):
    """The IMDB degree groups of a stripped CSR pattern (pags-spec §3.4).

    Columns (inputs) are grouped by fan-out ``d`` (the sum of ``data`` over the column); a group
    is kept when ``d > 0``, it has at least ``min_group`` columns, it touches ``n_r ≥ 2`` rows and
    passes the gate on ``(d_in, d_out) = (d, d·size/n_r)``: ``d_in ≥ 3`` and ``d_out > 1``
    (N23), or both ``≥ 3`` (``both_three``, I23). Each kept group's submatrix is returned
    transposed (its columns as rows, in column order; its rows renumbered in order) as CSR.

    Returns ``(d, size, n_r, g_indptr, g_indices, g_eid, ptr_off, nnz_off)``: per group the
    degree, column count and row count; the concatenated CSR pieces (``g_eid``: the entry of the
    pattern each group entry is, to pick binary and weighted values alike) and per-group offsets
    into them.
    """
    fan = np.zeros(n_cols)
    cnt = np.zeros(n_cols + 1, dtype=np.int64)
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            fan[indices[p]] += data[p]
            cnt[indices[p] + 1] += 1
    for j in range(n_cols):
        cnt[j + 1] += cnt[j]
    fill = cnt[:-1].copy()
    crow = np.empty(indptr[n_rows], dtype=np.int64)
    ceid = np.empty(indptr[n_rows], dtype=np.int64)
    for r in range(n_rows):  # CSC with rows ascending in every column
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            crow[fill[c]] = r
            ceid[fill[c]] = p
            fill[c] += 1
    order = np.argsort(fan, kind="mergesort")  # stable: columns in order within a group
    g_d = np.empty(n_cols)
    g_size = np.empty(n_cols, dtype=np.int64)
    g_nr = np.empty(n_cols, dtype=np.int64)
    ptr_off = np.empty(n_cols, dtype=np.int64)
    nnz_off = np.empty(n_cols, dtype=np.int64)
    g_indptr = np.empty(2 * n_cols + 1, dtype=np.int32)
    g_indices = np.empty(indptr[n_rows], dtype=np.int32)
    g_eid = np.empty(indptr[n_rows], dtype=np.int64)
    mark = np.full(n_rows, -1, dtype=np.int64)
    remap = np.empty(n_rows, dtype=np.int32)
    used = np.empty(n_rows, dtype=np.int64)
    ng = 0
    pp = 0
    ee = 0
    a = 0
    while a < n_cols:
        d = fan[order[a]]
        b = a + 1
        while b < n_cols and fan[order[b]] == d:
            b += 1
        size = b - a
        if d > 0 and size >= min_group:
            n_r = 0
            for t in range(a, b):
                c = order[t]
                for q in range(cnt[c], cnt[c + 1]):
                    r = crow[q]
                    if mark[r] != a:
                        mark[r] = a
                        used[n_r] = r
                        n_r += 1
            d_out = d * size / n_r
            ok = d >= 3 and (d_out >= 3 if both_three else d_out > 1)
            if ok and n_r >= 2:
                rs = np.sort(used[:n_r])
                for i in range(n_r):
                    remap[rs[i]] = i
                g_d[ng] = d
                g_size[ng] = size
                g_nr[ng] = n_r
                ptr_off[ng] = pp
                nnz_off[ng] = ee
                g_indptr[pp] = 0
                k = 0
                for t in range(a, b):
                    c = order[t]
                    for q in range(cnt[c], cnt[c + 1]):
                        g_indices[ee + k] = remap[crow[q]]
                        g_eid[ee + k] = ceid[q]
                        k += 1
                    pp += 1
                    g_indptr[pp] = k
                pp += 1
                ee += k
                ng += 1
        a = b
    return (g_d[:ng], g_size[:ng], g_nr[:ng], g_indptr[:pp], g_indices[:ee], g_eid[:ee],
            ptr_off[:ng], nnz_off[:ng])  # fmt: skip
