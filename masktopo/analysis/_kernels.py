r"""Compiled (numba) kernels: σ₁, σ₂ of many sparse matrices in one call, exact in float64.

:func:`top2_batch` takes many CSR matrices concatenated into flat arrays and returns the two
largest singular values of each, one matrix after the other, with no Python in the loop. It is the
CPU engine behind :func:`masktopo.analysis.spectral.solve_many` (and so behind PAGS scoring,
where one chunk of candidates brings thousands of matrices).

Per matrix, on the Gram operator ``G`` of its smaller side (``BBᵀ`` or ``BᵀB``, applied as two
sparse passes over the CSR arrays, never formed):

* smaller side ``s ≤ small_side``: the dense ``s × s`` Gram matrix formed from the entries,
  its top two eigenvectors (Householder reduction, Newton's method, inverse iteration; no
  LAPACK call, whose fixed costs dominate at these sizes) and a Rayleigh–Ritz step on them
  (exact whatever the connectivity);
* otherwise the bipartite graph is split into connected components (union–find), rank-one
  components get ``σ = ‖values‖``, small ones the dense route, and each large one a Lanczos run
  with partial reorthogonalization [S84]_ [GV13]_ from a seeded Gaussian start vector, stopped when the
  residual bounds ``β_k |s_{k,i}|`` of its two top Ritz pairs are at most ``tol·θ₁``. A connected
  non-negative matrix has a simple ``σ₁`` (Perron–Frobenius), which a single start vector cannot
  miss; solving components separately finds a ``σ₁`` shared by two components;
* the σ come from a Rayleigh–Ritz step on the two Ritz vectors ``W``: the singular values of
  ``BᵀW`` (or ``BW``) by a two-column QR and a 2×2 SVD in closed form, which keeps small σ
  exact to about ``ε·σ₁`` (``sqrt`` of the Gram Ritz values would not, e.g. ``σ₂ = 0`` of a
  complete bipartite graph); the two largest values over all components are kept.

The Ritz pairs of the tridiagonal ``T_k`` come from Newton's method on ``det(T_k − x·I)`` from a
validated upper bound (the top value), Rayleigh quotient iteration from the previous check's
vector validated by two Sturm counts (the second; bisection on Sturm counts the first time or when
that check fails), and inverse iteration [GV13]_ (§8.4), all ``O(k)``; checks are placed where the residual, falling
geometrically, should reach the limit. Start vectors are a pure function of the position, so a
result does not depend on which other matrices share the call (bit for bit). A matrix that does
not converge within ``max_steps`` is flagged; the caller solves it another way.

References
----------
.. [S84] H. D. Simon, "The Lanczos algorithm with partial reorthogonalization", Mathematics of
   Computation 42(165), 1984, pp. 115–142.
.. [GV13] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., Johns Hopkins, 2013,
   §10.1–10.3 (Lanczos), §8.4 (tridiagonal bisection and inverse iteration).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

_EPS = np.finfo(np.float64).eps
_SQRT_EPS = np.sqrt(_EPS)
_SEED = 0x5EED
# IEEE division (no zero-division checks: every division is guarded or harmless), cached to disk.
# Without the GIL: two threads of one process run the kernels at once (the spectral worker of
# masktopo.analysis.spectral is a thread, not a forked process).
_jit = njit(cache=True, error_model="numpy", nogil=True)
# Inner products and updates may be reassociated (SIMD) and fused: still deterministic for a
# given build, and within a few ulps of the sequential sum.
_jit_simd = njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "contract"})


@_jit
def _uniform(i, salt):
    """A uniform number in [0, 1) from index ``i`` (splitmix64 of ``i`` and ``salt``): start
    vectors are a pure function of the position, with no generator state."""
    x = np.uint64(i) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return float(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@_jit
def _gaussians(n):
    """``n`` standard normal numbers (Box–Muller on :func:`_uniform`): entry ``j`` depends on
    ``j`` only, so a matrix's Lanczos start vector ``table[:dim]`` does not depend on the call."""
    out = np.empty(n)
    for j in range(n):
        u1 = 1.0 - _uniform(2 * j, _SEED)
        out[j] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * _uniform(2 * j + 1, _SEED))
    return out


@_jit
def _apply_unit(indices, indptr, e0, m, n, rows_side, x, tmp, out):
    """:func:`_apply` for a binary matrix (about a tenth faster: one stream less)."""
    if rows_side:
        for c in range(n):
            tmp[c] = 0.0
        for r in range(m):
            xr = x[r]
            for p in range(indptr[r], indptr[r + 1]):
                tmp[indices[e0 + p]] += xr
        for r in range(m):
            acc = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                acc += tmp[indices[e0 + p]]
            out[r] = acc
    else:
        for c in range(n):
            out[c] = 0.0
        for r in range(m):
            acc = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                acc += x[indices[e0 + p]]
            tmp[r] = acc
        for r in range(m):
            tr = tmp[r]
            for p in range(indptr[r], indptr[r + 1]):
                out[indices[e0 + p]] += tr


@_jit
def _apply(data, indices, indptr, e0, m, n, rows_side, x, tmp, out, unit):
    """``out = B Bᵀ x`` (``rows_side``: the operator lives on the rows) or ``Bᵀ B x``;
    ``unit``: every stored value is 1 (a binary mask), so ``data`` is not read."""
    if unit:
        _apply_unit(indices, indptr, e0, m, n, rows_side, x, tmp, out)
        return
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


@_jit
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


@_jit
def _kth_eig(alpha, beta, k, j, lo_hint, hi_hint):
    """The ``j``-th smallest eigenvalue (0-based) of the ``k × k`` symmetric tridiagonal with
    diagonal ``alpha`` and off-diagonal ``beta``, by bisection on Sturm counts, to a few ulps.
    ``lo_hint``/``hi_hint`` narrow the Gershgorin interval when they are valid brackets."""
    lo = np.inf
    hi = -np.inf
    for i in range(k):
        r = (abs(beta[i - 1]) if i > 0 else 0.0) + (abs(beta[i]) if i < k - 1 else 0.0)
        lo = min(lo, alpha[i] - r)
        hi = max(hi, alpha[i] + r)
    if lo < lo_hint < hi and _sturm_below(alpha, beta, k, lo_hint) <= j:
        lo = lo_hint
    if lo < hi_hint < hi and _sturm_below(alpha, beta, k, hi_hint) >= j + 1:
        hi = hi_hint
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi or hi - lo <= 4.0 * _EPS * max(abs(lo), abs(hi)):
            break
        if _sturm_below(alpha, beta, k, mid) >= j + 1:
            hi = mid
        else:
            lo = mid
    return hi


@_jit
def _top_newton(alpha, beta, k, x):
    """Largest eigenvalue of ``T_k`` by Newton's method on ``det(T_k − x·I)`` from ``x`` above
    it: for a polynomial with real roots this decreases monotonically to the largest root
    (quadratically near it). The log-derivative comes from the LDLᵀ pivots ``p_j`` of
    ``T − x·I``, which are all negative above the spectrum."""
    for _ in range(100):
        p = min(alpha[0] - x, -1e-300)
        dp = -1.0
        acc = dp / p
        for j in range(1, k):
            b2 = beta[j - 1] * beta[j - 1]
            q = min(alpha[j] - x - b2 / p, -1e-300)  # negative above the spectrum
            dp = -1.0 + b2 * dp / (p * p)
            p = q
            acc += dp / p
        step = 1.0 / acc
        if not (step > 0.0) or step <= 2.0 * _EPS * abs(x):
            break
        x -= step
    return x


@_jit
def _tri_solve(alpha, beta, k, shift, rhs):
    """Solve ``(T − shift·I) x = rhs`` by Gaussian elimination with partial pivoting
    (LAPACK ``dgtsv``'s scheme), in place in ``rhs``; singular pivots are nudged."""
    _tri_solve_ws(alpha, beta, k, shift, rhs, np.empty((4, k)))


@_jit
def _tri_solve_ws(alpha, beta, k, shift, rhs, ws):
    """:func:`_tri_solve` with the workspace ``ws`` (``4 × k``, overwritten)."""
    d = ws[0]
    du = ws[1]
    du2 = ws[2]
    dl = ws[3]
    dmax = 0.0
    umax = 0.0
    for j in range(k):
        d[j] = alpha[j] - shift
        du[j] = 0.0
        du2[j] = 0.0
        dl[j] = 0.0
        dmax = max(dmax, abs(d[j]))
    for j in range(k - 1):
        du[j] = beta[j]
        dl[j] = beta[j]
        umax = max(umax, abs(beta[j]))
    tiny = _EPS * (dmax + 2.0 * umax + 1e-300)
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


@_jit
def _rqi_second(alpha, beta, k, s1, th1, x):
    """Second largest eigenpair of ``T_k`` by Rayleigh quotient iteration from ``x`` (the last
    check's second Ritz vector, zero-padded), kept orthogonal to the top vector ``s1``.

    Returns the eigenvalue with the unit vector in ``x[:k]``, or -1 when the iteration did not
    land on the second eigenvalue (checked with two Sturm counts); the caller then bisects.
    """
    for _ in range(6):
        c = 0.0
        for j in range(k):
            c += s1[j] * x[j]
        nrm = 0.0
        for j in range(k):
            x[j] -= c * s1[j]
            nrm += x[j] * x[j]
        nrm = np.sqrt(nrm)
        if not (nrm > 0.0) or not np.isfinite(nrm):
            return -1.0
        for j in range(k):
            x[j] /= nrm
        rho = alpha[0] * x[0] * x[0]  # xᵀ T x
        for j in range(1, k):
            rho += alpha[j] * x[j] * x[j] + 2.0 * beta[j - 1] * x[j - 1] * x[j]
        r2 = 0.0  # ‖T x − ρ x‖²
        for j in range(k):
            t = (alpha[j] - rho) * x[j]
            if j > 0:
                t += beta[j - 1] * x[j - 1]
            if j < k - 1:
                t += beta[j] * x[j + 1]
            r2 += t * t
        if np.sqrt(r2) <= 64.0 * _EPS * th1:
            delta = 1e-9 * th1
            if (
                rho + delta < th1
                and _sturm_below(alpha, beta, k, rho + delta) == k - 1
                and _sturm_below(alpha, beta, k, rho - delta) == k - 2
            ):
                return rho
            return -1.0
        _tri_solve(alpha, beta, k, rho, x)
    return -1.0


@_jit
def _eigvec(alpha, beta, k, theta, other, s):
    """Unit eigenvector of ``T_k`` for the eigenvalue ``theta`` into ``s[:k]`` by inverse
    iteration, kept orthogonal to ``other[:k]`` when ``other`` is given (non-empty)."""
    for j in range(k):
        s[j] = 1.0 + 0.01 * j  # not orthogonal to any eigenvector of an unreduced T in practice
    if k == 1:
        s[0] = 1.0
        return
    ws = np.empty((4, k))
    for _ in range(2):  # θ is accurate to a few ulps: two steps give the vector to ε/gap
        _tri_solve_ws(alpha, beta, k, theta, s, ws)
        if other.size:
            c = 0.0
            for j in range(k):
                c += other[j] * s[j]
            for j in range(k):
                s[j] -= c * other[j]
        nrm = 0.0
        for j in range(k):
            nrm += s[j] * s[j]
        nrm = np.sqrt(nrm)
        if not np.isfinite(nrm) or nrm == 0.0:
            for j in range(k):
                s[j] = 1.0 / np.sqrt(k)
            continue
        for j in range(k):
            s[j] /= nrm


@_jit_simd
def _dot(a, b, n):
    acc = 0.0
    for i in range(n):
        acc += a[i] * b[i]
    return acc


@_jit
def _apply_pair(d1, indices, indptr, e0, m, n, rows_side, x0, x1, t0, t1, o0, o1):
    """:func:`_apply` of two matrices with one pattern in one traversal: ``o0 = G₀ x0`` for the
    binary matrix (values 1, not read) and ``o1 = G₁ x1`` for the values ``d1``. Each result is
    the same bits as its own :func:`_apply` (the same operations in the same order per matrix);
    the indices are read once instead of twice (about a quarter less time than two calls)."""
    if rows_side:
        for c in range(n):
            t0[c] = 0.0
            t1[c] = 0.0
        for r in range(m):
            a = x0[r]
            b = x1[r]
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[e0 + p]
                t0[j] += a
                t1[j] += d1[e0 + p] * b
        for r in range(m):
            acc0 = 0.0
            acc1 = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[e0 + p]
                acc0 += t0[j]
                acc1 += d1[e0 + p] * t1[j]
            o0[r] = acc0
            o1[r] = acc1
    else:
        for c in range(n):
            o0[c] = 0.0
            o1[c] = 0.0
        for r in range(m):
            acc0 = 0.0
            acc1 = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[e0 + p]
                acc0 += x0[j]
                acc1 += d1[e0 + p] * x1[j]
            t0[r] = acc0
            t1[r] = acc1
        for r in range(m):
            a = t0[r]
            b = t1[r]
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[e0 + p]
                o0[j] += a
                o1[j] += d1[e0 + p] * b


@_jit
def _is_unit(data, e0, nnz):
    """Whether every stored value is 1 (a binary matrix: its value stream is not read)."""
    for p in range(nnz):
        if data[e0 + p] != 1.0:
            return False
    return True


@_jit
def _lanczos(data, data1, nl, indices, indptr, e0, m, n, rows_side, dim, tol, max_steps, start,
             Y1, Y2):  # fmt: skip
    """Top two eigenpairs of the Gram operator ``G`` of a connected matrix by Lanczos with
    partial reorthogonalization [S84]_ (full Gram–Schmidt against every Lanczos vector whenever
    the estimated loss of orthogonality exceeds √ε, and for the vector after); Ritz vectors into
    ``Y1[l]``, ``Y2[l]``. Returns ``(converged, steps)``, one entry per lane.

    ``nl`` lanes (1 or 2) run side by side on one pattern with the values ``data`` (lane 0) and
    ``data1`` (lane 1; ignored with one lane), each for at most ``max_steps[l]`` steps: while
    both run and lane 0 is binary, one traversal of the pattern applies both operators
    (:func:`_apply_pair`). Each lane's numbers are the same bits as when it runs alone.

    A lane stops when the residual bounds ``β_k |s_{k,i}|`` of both top Ritz pairs are at most
    ``tol·θ₁``, or when the Krylov space is exhausted (``β_k ≈ 0`` or ``k = dim``: the Ritz
    values are then exact). The second pair is only examined once the first has converged, and
    the next check is placed where the geometrically falling residual should reach the limit.
    A connected non-negative matrix has a simple ``σ₁`` (Perron–Frobenius), so a single start
    vector cannot miss a second copy of it. (Without any reorthogonalization, Lanczos on small
    or low-rank Gram matrices returned spurious second values: the reference tests caught it.)
    """
    S = 0
    for lane in range(nl):
        S = max(S, max_steps[lane])
    Q, state = _lanczos_start(nl, dim, n if rows_side else m, S, max_steps, start)
    Q = _lanczos_run(Q, state, data, data1, nl, indices, indptr, e0, m, n, rows_side, dim, tol,
                     max_steps)  # fmt: skip
    _lanczos_vectors(Q, state, nl, dim, Y1, Y2)
    return state[_OK], state[_STEPS]


# Where _lanczos_start's state keeps the per-lane flags and step counts.
_OK = 11
_STEPS = 12


@_jit
def _lanczos_start(nl, dim, other, cap, max_steps, start):
    """The state of :func:`_lanczos` before its first step, for runs of at most ``cap`` steps
    per lane: ``(Q, state)``, the Lanczos basis (grown by :func:`_lanczos_run`) and a tuple of
    the other arrays (recurrence, ω estimates, Ritz checks, per-lane flags and counters)."""
    Q = np.empty((nl, min(cap + 1, 64), dim))
    tmp = np.empty((nl, other))
    z = np.empty((nl, dim))
    alpha = np.zeros((nl, cap + 1))
    beta = np.zeros((nl, cap + 1))
    cbuf = np.zeros(cap + 1)
    # ω estimates of the previous, current and next vector: W[l, (rot + i) % 3], i = 0, 1, 2
    W = np.zeros((nl, 3, cap + 2))
    s1 = np.zeros((nl, cap + 1))
    s2 = np.zeros((nl, cap + 1))
    # per lane: θ₁, θ₂, ‖T‖ estimate, last tracked residual, residual bounds of the last check
    F = np.zeros((6, nl))
    F[3:] = np.inf
    # per lane: rotation of W, steps taken, next check, step of the last tracked residual,
    # length of the second Ritz vector of the last check
    I = np.zeros((5, nl), dtype=np.int64)
    I[2] = 4
    # per lane: reorthogonalize the next vector too, the first pair has converged (the second
    # is tracked), converged, running
    B = np.zeros((4, nl), dtype=np.bool_)
    nrm = np.sqrt(_dot(start, start, dim))
    for lane in range(nl):
        W[lane, 1, 0] = 1.0
        B[3, lane] = max_steps[lane] > 0
        q = Q[lane, 0]
        for i in range(dim):
            q[i] = start[i] / nrm
    return Q, (tmp, z, alpha, beta, cbuf, W, s1, s2, F, I, B, B[2], I[1])


@_jit
def _lanczos_run(Q, state, data, data1, nl, indices, indptr, e0, m, n, rows_side, dim, tol,
                 max_steps):  # fmt: skip
    """Lanczos steps of :func:`_lanczos` from ``state`` (:func:`_lanczos_start`) until every lane
    has converged or taken ``max_steps[lane]`` steps (at most the state's ``cap``); returns the
    basis (grown when needed). A lane that stopped at an earlier, smaller budget without
    converging goes on (resumed: every lane that runs must have taken the same steps): its
    recurrence is the one a single run with the larger budget computes, only the Ritz checks
    differ (one more, at the budget of the earlier run)."""
    tmp, z, alpha, beta, cbuf, W, s1, s2, F, I, B, _, _ = state
    th1, th2, tnorm, last_res, res1, res2 = F[0], F[1], F[2], F[3], F[4], F[5]
    rot, K, next_check, last_k, k_s2 = I[0], I[1], I[2], I[3], I[4]
    force, second, ok, active = B[0], B[1], B[2], B[3]
    cap = alpha.shape[1] - 1
    nnz = indptr[m]
    unit0 = _is_unit(data, e0, nnz)
    unit1 = nl > 1 and _is_unit(data1, e0, nnz)
    empty = np.zeros(0)
    max_steps = np.minimum(max_steps, cap)
    S = 0
    k0 = 0
    for lane in range(nl):
        S = max(S, max_steps[lane])
        k0 = max(k0, K[lane])
    for lane in range(nl):  # resumed: the vector after the last step (not formed at a stop)
        KL = K[lane]
        if ok[lane] or active[lane] or KL == 0 or max_steps[lane] <= KL:
            continue
        if KL >= Q.shape[1]:
            Q2 = np.empty((nl, min(2 * Q.shape[1], cap + 1), dim))
            Q2[:, :KL] = Q[:, :KL]
            Q = Q2
        b = beta[lane, KL - 1]
        qn = Q[lane, KL]
        zl = z[lane]
        for i in range(dim):
            qn[i] = zl[i] / b
        active[lane] = True
    for k in range(k0, S):
        if nl == 2 and active[0] and active[1] and unit0:
            _apply_pair(data1, indices, indptr, e0, m, n, rows_side, Q[0, k], Q[1, k], tmp[0],
                        tmp[1], z[0], z[1])  # fmt: skip
        else:
            for lane in range(nl):
                if active[lane]:
                    values = data if lane == 0 else data1
                    unit = unit0 if lane == 0 else unit1
                    _apply(values, indices, indptr, e0, m, n, rows_side, Q[lane, k], tmp[lane],
                           z[lane], unit)  # fmt: skip
        for lane in range(nl):
            if not active[lane]:
                continue
            Ql = Q[lane]
            q = Ql[k]
            zl = z[lane]
            al = alpha[lane]
            be = beta[lane]
            r = rot[lane]
            w_prev = W[lane, r % 3]
            w_cur = W[lane, (r + 1) % 3]
            w_next = W[lane, (r + 2) % 3]
            a = _dot(q, zl, dim)
            if k > 0:
                qp = Ql[k - 1]
                b = be[k - 1]
                for i in range(dim):
                    zl[i] -= a * q[i] + b * qp[i]
            else:
                for i in range(dim):
                    zl[i] -= a * q[i]
            c = _dot(q, zl, dim)  # local reorthogonalization against q_k: keeps α accurate
            for i in range(dim):
                zl[i] -= c * q[i]
            a += c
            n1 = _dot(zl, zl, dim)
            b = np.sqrt(n1)
            # Partial reorthogonalization (Simon): estimate ω_i = |q_{k+1}·q_i| by its
            # recurrence and reorthogonalize against every Lanczos vector only when it exceeds
            # √ε, and then the next vector too; this keeps the basis semi-orthogonal, which
            # makes the tridiagonal matrix as good as under full reorthogonalization.
            worst = 0.0
            if k > 0 and b > 0.0:
                for i in range(k):
                    t = be[i] * w_cur[i + 1] + (al[i] - a) * w_cur[i] - be[k - 1] * w_prev[i]
                    if i > 0:
                        t += be[i - 1] * w_cur[i - 1]
                    noise = _EPS * (abs(al[i]) + abs(a) + be[i] + b + be[k - 1])
                    t = (t + (noise if t >= 0.0 else -noise)) / b
                    w_next[i] = t
                    worst = max(worst, abs(t))
            if force[lane] or worst > _SQRT_EPS or not np.isfinite(worst):
                n0 = n1
                for _ in range(2):  # classical Gram–Schmidt, repeated by the DGKS criterion
                    a += _reorth(Ql, k + 1, zl, dim, cbuf)
                    n1 = _dot(zl, zl, dim)
                    if n1 >= 0.5 * n0:
                        break
                    n0 = n1
                b = np.sqrt(n1)
                for i in range(k):
                    w_next[i] = _EPS
                force[lane] = not force[lane]  # triggered by ω: also does the next vector
            w_next[k] = _EPS
            w_next[k + 1] = 1.0
            rot[lane] = r + 1  # the current estimates become the previous ones, and so on
            al[k] = a
            be[k] = b
            KL = k + 1
            K[lane] = KL
            tnorm[lane] = max(tnorm[lane], abs(a), b)
            broke = b <= 64.0 * _EPS * max(tnorm[lane], 1e-300) or KL >= dim  # space exhausted
            if broke or KL >= next_check[lane] or KL == max_steps[lane]:
                # θ₁ grows with K and stays below θ₁_prev + res₁_prev (the residual bound):
                # Newton from just above that, when a Sturm count confirms it is above; else
                # bisection.
                up = th1[lane] + 1.5 * res1[lane] + 8.0 * _EPS * th1[lane]
                if res1[lane] < np.inf and _sturm_below(al, be, KL, up) == KL:
                    th1[lane] = _top_newton(al, be, KL, up)
                else:
                    th1[lane] = _kth_eig(al, be, KL, KL - 1, th1[lane], np.inf)
                sl1 = s1[lane]
                sl2 = s2[lane]
                _eigvec(al, be, KL, th1[lane], empty, sl1)
                lim = tol * max(th1[lane], 1e-300)
                res1[lane] = b * abs(sl1[KL - 1])
                res = res1[lane]
                if res <= lim or broke or KL == max_steps[lane]:  # the second pair only then
                    if KL >= 2:
                        t2 = -1.0
                        if k_s2[lane] > 0:  # Rayleigh quotient iteration from the last vector
                            for j in range(k_s2[lane], KL):
                                sl2[j] = 0.0
                            t2 = _rqi_second(al, be, KL, sl1, th1[lane], sl2)
                        if t2 >= 0.0:
                            th2[lane] = t2
                        else:  # bisection (first time, or the iteration went elsewhere)
                            up = th1[lane]
                            if res2[lane] < np.inf:
                                up = th2[lane] + 1.5 * res2[lane] + 8.0 * _EPS * th1[lane]
                            th2[lane] = _kth_eig(al, be, KL, KL - 2, th2[lane], min(up, th1[lane]))
                            _eigvec(al, be, KL, th2[lane], sl1[:KL], sl2)
                        k_s2[lane] = KL
                        res2[lane] = b * abs(sl2[KL - 1])
                        res = max(res, res2[lane])
                    else:
                        sl2[0] = 0.0
                if broke or res <= lim:
                    ok[lane] = True
                    active[lane] = False
                    continue
                if KL == max_steps[lane]:
                    active[lane] = False
                    continue
                if res1[lane] <= lim and not second[lane]:
                    second[lane] = True
                    last_res[lane] = np.inf  # the residual now tracked is the second pair's
                # Next check where the residual, falling geometrically, should reach the
                # limit: a check costs about as much as one or two steps.
                gap = 4
                if last_res[lane] < np.inf and res < last_res[lane]:
                    rate = np.log(res / last_res[lane]) / (KL - last_k[lane])  # < 0
                    gap = int(min(8.0, max(1.0, 0.9 * np.log(lim / res) / rate)))
                last_res[lane] = res
                last_k[lane] = KL
                next_check[lane] = KL + gap
            if KL >= Q.shape[1]:  # grow the basis (most runs need 30–60 vectors, not dim)
                Q2 = np.empty((nl, min(2 * Q.shape[1], cap + 1), dim))
                Q2[:, :KL] = Q[:, :KL]
                Q = Q2
            qn = Q[lane, KL]
            for i in range(dim):
                qn[i] = zl[i] / b
        done = True
        for lane in range(nl):
            if active[lane]:
                done = False
        if done:
            break
    return Q


@_jit
def _lanczos_vectors(Q, state, nl, dim, Y1, Y2):
    """The top two Ritz vectors of every lane of a :func:`_lanczos_run` into ``Y1``, ``Y2``."""
    s1, s2, K = state[6], state[7], state[12]
    for lane in range(nl):
        _combine(Q[lane], s1[lane], K[lane], dim, Y1[lane])
        _combine(Q[lane], s2[lane], K[lane], dim, Y2[lane])


@_jit_simd
def _reorth(Q, K, z, dim, c):
    """One classical Gram–Schmidt pass of ``z`` against ``Q[:K]``; returns the coefficient on
    ``Q[K-1]`` (the current Lanczos vector, whose share belongs to α)."""
    for j in range(K):
        qj = Q[j]
        acc = 0.0
        for i in range(dim):
            acc += qj[i] * z[i]
        c[j] = acc
    for j in range(K):
        qj = Q[j]
        cj = c[j]
        for i in range(dim):
            z[i] -= cj * qj[i]
    return c[K - 1]


@_jit
def _combine(Q, s, K, dim, y):
    """``y = Q[:K]ᵀ s``, normalized (a Ritz vector from tridiagonal coefficients)."""
    for i in range(dim):
        y[i] = 0.0
    for j in range(K):
        sj = s[j]
        qj = Q[j]
        for i in range(dim):
            y[i] += sj * qj[i]
    nrm = np.sqrt(_dot(y, y, dim))
    if nrm > 0.0:
        for i in range(dim):
            y[i] /= nrm


@_jit
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
    _sv_upper2(r11, r12, np.sqrt(_dot(Y[1], Y[1], n)), out)


@_jit
def _sv_upper2(f, g, h, out):
    """Singular values of the upper triangular ``[[f, g], [0, h]]`` into ``out`` (descending),
    in closed form to high relative accuracy: ``σ_max σ_min = |f h|`` and
    ``σ_max ± σ_min = √((|f| ± |h|)² + g²)``, evaluated with the ratios of LAPACK's ``dlas2``
    so that nothing overflows and ``σ_min`` keeps its relative accuracy when it is tiny
    (Demmel, Kahan, "Accurate singular values of bidiagonal matrices", SIAM J. Sci. Stat.
    Comput. 11(5), 1990). No LAPACK call: a 2×2 SVD through LAPACK costs microseconds, and
    every matrix of every layer needs one per value set."""
    fa = abs(f)
    ga = abs(g)
    ha = abs(h)
    mn = min(fa, ha)
    mx = max(fa, ha)
    if mn == 0.0:
        out[1] = 0.0
        if mx == 0.0:
            out[0] = ga
        else:
            big = max(mx, ga)
            small = min(mx, ga)
            out[0] = big * np.sqrt(1.0 + (small / big) ** 2)
        return
    if ga < mx:
        s = 1.0 + mn / mx
        t = (mx - mn) / mx
        u = (ga / mx) ** 2
        c = 2.0 / (np.sqrt(s * s + u) + np.sqrt(t * t + u))
        out[0] = mx / c
        out[1] = mn * c
        return
    u = mx / ga
    if u == 0.0:  # g dwarfs f and h
        out[0] = ga
        out[1] = (mn * mx) / ga
        return
    s = 1.0 + mn / mx
    t = (mx - mn) / mx
    c = 1.0 / (np.sqrt(1.0 + (s * u) ** 2) + np.sqrt(1.0 + (t * u) ** 2))
    out[0] = ga / (c + c)
    out[1] = 2.0 * (mn * c) * u


@_jit
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


@_jit
def _sparse_gram(data, indices, indptr, e0, m, n, rows_side, dim):
    """The dense ``dim × dim`` Gram matrix ``B Bᵀ`` (``rows_side``) or ``Bᵀ B`` of a CSR
    matrix, from its entries: ``Σ_i Σ_{j≥i} nnz_j`` products (rows side, one row scattered at a
    time) or ``Σ_r deg_r²`` (columns side), instead of a dense ``dim × other`` product."""
    G = np.zeros((dim, dim))
    if rows_side:
        t = np.zeros(n)
        for i in range(m):
            for p in range(indptr[i], indptr[i + 1]):  # (a repeated index adds up)
                t[indices[e0 + p]] += data[e0 + p]
            for j in range(i, m):
                acc = 0.0
                for p in range(indptr[j], indptr[j + 1]):
                    acc += data[e0 + p] * t[indices[e0 + p]]
                G[i, j] = acc
                G[j, i] = acc
            for p in range(indptr[i], indptr[i + 1]):
                t[indices[e0 + p]] = 0.0
    else:
        for r in range(m):
            for p in range(indptr[r], indptr[r + 1]):
                a = data[e0 + p]
                cp = indices[e0 + p]
                for q in range(indptr[r], indptr[r + 1]):
                    G[cp, indices[e0 + q]] += a * data[e0 + q]
    return G


@_jit
def _tridiagonalize(A, n, alpha, beta, V, tau):
    """Householder reduction of the symmetric ``n × n`` matrix ``A`` (overwritten) to the
    tridiagonal ``T = Qᵀ A Q`` (diagonal ``alpha``, off-diagonal ``beta[:n-1]``) with
    ``Q = H_0 H_1 ⋯ H_{n-3}``, ``H_k = I − τ_k v_k v_kᵀ`` (``v_k`` in ``V[k, k+1:]``, ``τ_k`` in
    ``tau[k]``; [GV13]_ Alg. 8.3.1)."""
    p = np.empty(n)
    for k in range(n - 2):
        rest = 0.0
        for i in range(k + 2, n):
            rest += A[i, k] * A[i, k]
        x0 = A[k + 1, k]
        if rest == 0.0:  # already tridiagonal in this column
            tau[k] = 0.0
            beta[k] = x0
            continue
        a = np.sqrt(x0 * x0 + rest)
        if x0 > 0.0:
            a = -a  # v = x − a e₁ without cancellation; H x = a e₁
        V[k, k + 1] = x0 - a
        for i in range(k + 2, n):
            V[k, i] = A[i, k]
        t = 2.0 / ((x0 - a) * (x0 - a) + rest)
        tau[k] = t
        beta[k] = a
        # A₂₂ ← H A₂₂ H = A₂₂ − v wᵀ − w vᵀ, p = τ A₂₂ v, w = p − (τ/2)(pᵀv) v
        for i in range(k + 1, n):
            acc = 0.0
            for j in range(k + 1, n):
                acc += A[i, j] * V[k, j]
            p[i] = t * acc
        c = 0.0
        for i in range(k + 1, n):
            c += p[i] * V[k, i]
        c *= 0.5 * t
        for i in range(k + 1, n):
            p[i] -= c * V[k, i]
        for i in range(k + 1, n):
            vi = V[k, i]
            wi = p[i]
            for j in range(k + 1, n):
                A[i, j] -= vi * p[j] + wi * V[k, j]
    for i in range(n):
        alpha[i] = A[i, i]
    if n >= 2:
        beta[n - 2] = A[n - 1, n - 2]


@_jit
def _back_transform(V, tau, n, y):
    """``y ← Q y`` for the ``Q`` of :func:`_tridiagonalize`."""
    for k in range(n - 3, -1, -1):
        if tau[k] == 0.0:
            continue
        c = 0.0
        for i in range(k + 1, n):
            c += V[k, i] * y[i]
        c *= tau[k]
        for i in range(k + 1, n):
            y[i] -= c * V[k, i]


@_jit
def _second_newton(alpha, beta, k, th1):
    """The second largest eigenvalue of ``T_k`` given the largest ``th1``: Newton's method on
    ``det(T_k − x·I)/(x − th1)`` from just below ``th1``, when a Sturm count shows that the
    second lies below that start (the iteration then decreases monotonically to it, as
    :func:`_top_newton` to the largest); otherwise (the two are closer than ``1e-9·th1``)
    bisection. Validated by Sturm counts at the end; bisection when they disagree."""
    scale = max(abs(th1), 1e-300)
    x = th1 - 1e-9 * scale
    if k < 2 or _sturm_below(alpha, beta, k, x) != k - 1:
        return _kth_eig(alpha, beta, k, k - 2, -np.inf, th1)
    for _ in range(100):
        p = alpha[0] - x
        if p == 0.0:
            p = -1e-300
        dp = -1.0
        acc = dp / p
        for j in range(1, k):
            b2 = beta[j - 1] * beta[j - 1]
            q = alpha[j] - x - b2 / p
            if q == 0.0:
                q = -1e-300
            dp = -1.0 + b2 * dp / (p * p)
            p = q
            acc += dp / p
        acc -= 1.0 / (x - th1)  # the log-derivative of the deflated polynomial
        step = 1.0 / acc
        if not (step > 0.0) or not np.isfinite(step) or step <= 2.0 * _EPS * abs(x):
            break
        x -= step
    delta = 16.0 * _EPS * scale
    if (
        _sturm_below(alpha, beta, k, x + delta) >= k - 1
        and _sturm_below(alpha, beta, k, x - delta) <= k - 2
    ):
        return x
    return _kth_eig(alpha, beta, k, k - 2, -np.inf, th1)  # pragma: no cover - safeguard


@_jit
def _top2_vectors(G, n, u1, u2):
    """Eigenvectors of the two largest eigenvalues of the symmetric ``n × n`` matrix ``G``
    (``n ≥ 2``, overwritten) into ``u1``, ``u2``: Householder tridiagonalization, the top
    eigenvalue by Newton's method from an upper bound (Collatz–Wielandt for a non-negative
    ``G``, else Gershgorin), the second by deflated Newton (:func:`_second_newton`), their
    vectors by inverse iteration (the second from another start vector, kept orthogonal to the
    first, so a double top eigenvalue gives two vectors of its eigenspace) and the
    back-transformation.
    The vectors feed a Rayleigh–Ritz step, whose values err by the square of the vectors'
    error (which is about ``ε‖G‖/gap``; a value whose gap is that small is itself that close)."""
    # An upper bound on λ₁ to start Newton from: for a non-negative G the Collatz–Wielandt
    # bound max_i (G w)_i / w_i with w = G·1 (tight: one power step), else Gershgorin's.
    cw = np.inf
    w = np.zeros(n)
    nonneg = True
    for i in range(n):
        for j in range(n):
            w[i] += G[i, j]
            nonneg = nonneg and G[i, j] >= 0.0
    if nonneg:
        cw = 0.0
        for i in range(n):
            acc = 0.0
            for j in range(n):
                acc += G[i, j] * w[j]
            if w[i] > 0.0:
                cw = max(cw, acc / w[i])
            elif acc > 0.0:  # pragma: no cover - a zero row sum with a non-zero product
                cw = np.inf
    alpha = np.empty(n)
    beta = np.zeros(n)
    V = np.zeros((max(n - 2, 1), n))
    tau = np.zeros(max(n - 2, 1))
    _tridiagonalize(G, n, alpha, beta, V, tau)
    top = -np.inf
    for i in range(n):
        r = (abs(beta[i - 1]) if i > 0 else 0.0) + (abs(beta[i]) if i < n - 1 else 0.0)
        top = max(top, alpha[i] + r)
    top = min(top, cw)
    th1 = _top_newton(alpha, beta, n, top * (1.0 + 16.0 * _EPS) + 1e-300)
    th2 = _second_newton(alpha, beta, n, th1)
    s1 = np.empty(n)
    s2 = np.empty(n)
    ws = np.empty((4, n))
    _eigvec(alpha, beta, n, th1, np.zeros(0), s1)
    # The second from another start vector, orthogonal to the first: when θ₂ = θ₁ (a split
    # T), inverse iteration from the first's start vector would return the first's direction.
    for j in range(n):
        s2[j] = (1.0 + 0.013 * j) * (1.0 if j % 2 == 0 else -1.0)
    for it in range(3):
        c = _dot(s1, s2, n)
        for j in range(n):
            s2[j] -= c * s1[j]
        nrm = np.sqrt(_dot(s2, s2, n))
        if not np.isfinite(nrm) or nrm == 0.0:  # pragma: no cover - s2 ∥ s1: any orthogonal
            for j in range(n):
                s2[j] = 0.0
            s2[1 if abs(s1[0]) >= abs(s1[1]) else 0] = 1.0
            c = _dot(s1, s2, n)
            for j in range(n):
                s2[j] -= c * s1[j]
            nrm = np.sqrt(_dot(s2, s2, n))
        for j in range(n):
            s2[j] /= nrm
        if it < 2:  # θ₂ is accurate to a few ulps: two steps give the vector to ε/gap
            _tri_solve_ws(alpha, beta, n, th2, s2, ws)
    _back_transform(V, tau, n, s1)
    _back_transform(V, tau, n, s2)
    for i in range(n):
        u1[i] = s1[i]
        u2[i] = s2[i]


@_jit
def _dense_small(data, indices, indptr, e0, m, n, rows_side, dim, out):
    """σ₁, σ₂ through the dense ``dim × dim`` Gram matrix (:func:`_sparse_gram`), its top two
    eigenvectors (:func:`_top2_vectors`) and a Rayleigh–Ritz step on them (:func:`_ritz2`):
    exact whatever the connectivity, with no LAPACK call (whose fixed costs dominate at these
    sizes)."""
    G = _sparse_gram(data, indices, indptr, e0, m, n, rows_side, dim)
    u1 = np.empty(dim)
    u2 = np.empty(dim)
    _top2_vectors(G, dim, u1, u2)
    _ritz2(data, indices, indptr, e0, m, n, rows_side, dim, u1, u2, out)


@_jit
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@_jit
def _union_find(indices, indptr, e0, m, n):
    """The union–find forest of the bipartite graph of a CSR pattern (``m`` row nodes, then
    ``n`` column nodes; the entries of row ``r`` at ``e0 + indptr[r] … e0 + indptr[r+1]``):
    ``parent`` with every set's root its smallest node, whatever the order of the unions."""
    parent = np.arange(m + n)
    for r in range(m):
        a = _find(parent, r)
        for p in range(indptr[r], indptr[r + 1]):
            b = _find(parent, m + indices[e0 + p])
            if b < a:
                parent[a] = b
                a = b
            elif b > a:
                parent[b] = a
    return parent


@_jit
def _solve_connected(data, data1, nl, indices, indptr, e0, m, n, tol, max_steps, small_side, out,
                     table):  # fmt: skip
    """σ₁, σ₂ of ``nl`` (1 or 2) matrices with one pattern whose graph is connected (or small:
    the dense route is exact whatever the connectivity), the values ``data`` and ``data1`` (lane
    1; ignored with one lane) into ``out[l]``; their Lanczos runs side by side
    (:func:`_lanczos`), each lane the same bits as alone. Returns ``(converged, Lanczos steps)``
    per lane."""
    rows_side = m <= n
    dim = m if rows_side else n
    ok = np.ones(nl, dtype=np.bool_)
    K = np.zeros(nl, dtype=np.int64)
    if dim == 1:  # rank one: σ₁ = ‖data‖
        for lane in range(nl):
            values = data if lane == 0 else data1
            acc = 0.0
            for p in range(indptr[m]):
                acc += values[e0 + p] * values[e0 + p]
            out[lane, 0] = np.sqrt(acc)
            out[lane, 1] = 0.0
        return ok, K
    if dim <= small_side:
        for lane in range(nl):
            values = data if lane == 0 else data1
            _dense_small(values, indices, indptr, e0, m, n, rows_side, dim, out[lane])
        return ok, K
    Y = np.empty((2, nl, dim))
    ok, K = _lanczos(data, data1, nl, indices, indptr, e0, m, n, rows_side, dim, tol,
                     np.full(nl, min(max_steps, dim)), table[:dim], Y[0], Y[1])  # fmt: skip
    for lane in range(nl):
        values = data if lane == 0 else data1
        _ritz2(values, indices, indptr, e0, m, n, rows_side, dim, Y[0, lane], Y[1, lane],
               out[lane])  # fmt: skip
    return ok, K


@_jit
def _solve_one(data, data1, nl, indices, indptr, e0, m, n, tol, max_steps, small_side, out,
               table):  # fmt: skip
    """σ₁, σ₂ of ``nl`` (1 or 2) matrices with one pattern (as :func:`_solve_connected`): split
    into connected components unless small, solve each and keep the two largest values.
    Returns ``(converged, Lanczos steps)`` per lane (steps summed over the components)."""
    if min(m, n) <= small_side:
        return _solve_connected(data, data1, nl, indices, indptr, e0, m, n, tol, max_steps,
                                small_side, out, table)  # fmt: skip
    parent = _union_find(indices, indptr, e0, m, n)
    label = np.full(m + n, -1, dtype=np.int64)
    n_comp = 0
    for x in range(m + n):
        root = _find(parent, x)
        if label[root] < 0:
            label[root] = n_comp
            n_comp += 1
        label[x] = label[root]
    comp_rows = np.zeros(n_comp, dtype=np.int64)
    comp_cols = np.zeros(n_comp, dtype=np.int64)
    comp_nnz = np.zeros(n_comp, dtype=np.int64)
    for r in range(m):
        comp_rows[label[r]] += 1
        comp_nnz[label[r]] += indptr[r + 1] - indptr[r]
    for c in range(n):
        comp_cols[label[m + c]] += 1
    n_real = 0
    for g in range(n_comp):
        if comp_nnz[g] > 0:
            n_real += 1
    if n_real <= 1:  # connected (apart from empty rows and columns)
        return _solve_connected(data, data1, nl, indices, indptr, e0, m, n, tol, max_steps,
                                small_side, out, table)  # fmt: skip
    # Local numbering of rows and columns inside their component, in order.
    local = np.zeros(m + n, dtype=np.int64)
    seen_r = np.zeros(n_comp, dtype=np.int64)
    seen_c = np.zeros(n_comp, dtype=np.int64)
    for r in range(m):
        local[r] = seen_r[label[r]]
        seen_r[label[r]] += 1
    for c in range(n):
        local[m + c] = seen_c[label[m + c]]
        seen_c[label[m + c]] += 1
    # Component-major CSR: rows of component 0 first, and so on (rows stay in order).
    row_start = np.zeros(n_comp + 1, dtype=np.int64)
    nnz_start = np.zeros(n_comp + 1, dtype=np.int64)
    for g in range(n_comp):
        row_start[g + 1] = row_start[g] + comp_rows[g] + 1
        nnz_start[g + 1] = nnz_start[g] + comp_nnz[g]
    sub_ptr = np.zeros(row_start[n_comp], dtype=np.int64)
    sub_ind = np.empty(nnz_start[n_comp], dtype=np.int32)
    sub_dat = np.empty((nl, nnz_start[n_comp]))
    fill = nnz_start[:-1].copy()
    for r in range(m):
        g = label[r]
        for p in range(indptr[r], indptr[r + 1]):
            sub_ind[fill[g]] = local[m + indices[e0 + p]]
            sub_dat[0, fill[g]] = data[e0 + p]
            if nl > 1:
                sub_dat[1, fill[g]] = data1[e0 + p]
            fill[g] += 1
        sub_ptr[row_start[g] + local[r] + 1] = fill[g] - nnz_start[g]
    best = np.zeros((nl, 2))
    part = np.zeros((nl, 2))
    ok = np.ones(nl, dtype=np.bool_)
    steps = np.zeros(nl, dtype=np.int64)
    for g in range(n_comp):
        if comp_nnz[g] == 0:
            continue
        ip = sub_ptr[row_start[g] : row_start[g + 1]]
        for i in range(1, comp_rows[g] + 1):  # rows without entries keep the previous end
            if ip[i] < ip[i - 1]:
                ip[i] = ip[i - 1]
        ok_g, k_g = _solve_connected(sub_dat[0], sub_dat[nl - 1], nl, sub_ind, ip, nnz_start[g],
                                     comp_rows[g], comp_cols[g], tol, max_steps, small_side,
                                     part, table)  # fmt: skip
        for lane in range(nl):
            ok[lane] = ok[lane] and ok_g[lane]
            steps[lane] += k_g[lane]
            for v in part[lane]:
                if v > best[lane, 0]:
                    best[lane, 1] = best[lane, 0]
                    best[lane, 0] = v
                elif v > best[lane, 1]:
                    best[lane, 1] = v
    for lane in range(nl):
        out[lane, 0] = best[lane, 0]
        out[lane, 1] = best[lane, 1]
    return ok, steps


@_jit
def _pair_lanes(data, nnz_off, i, j, nnz):
    """Matrix ``i`` and its partner ``j`` (one pattern, :func:`pack`) as lanes: ``(a, b, d0,
    d1)``, ``a``/``b`` the matrices of lane 0/1 (lane 0 the binary one when there is one: its
    products then share the traversal) and ``d0``/``d1`` their values, offset so that
    ``d[nnz_off[i] + p]`` is entry ``p`` of the lane's matrix while the indices stay ``i``'s."""
    a, b = (j, i) if _is_unit(data, nnz_off[j], nnz) else (i, j)
    e0 = nnz_off[i]
    return a, b, data[nnz_off[a] - e0 :], data[nnz_off[b] - e0 :]


@_jit
def top2_batch(data, indices, indptr, ptr_off, nnz_off, shapes, partner, tol, max_steps,
               small_side):  # fmt: skip
    """σ₁, σ₂ of every matrix ``i``: CSR ``indptr[ptr_off[i] : ptr_off[i] + m + 1]`` (local, from
    0), ``indices``/``data`` from ``nnz_off[i]``, shape ``shapes[i] = (m, n)``. ``partner[i] = j
    > i`` says that matrix ``j`` has the pattern of ``i`` (other values): the two are solved side
    by side (:func:`_lanczos`: one traversal for both products while both run, each the same bits
    as alone); ``-1`` (or an empty ``partner``) otherwise.

    Returns ``(out, ok, steps)``: ``(nb, 2)`` float64 descending; ``ok[i] = False`` where a
    Lanczos run did not converge within ``max_steps``; Lanczos steps per matrix (summed over its
    components; 0 for the dense route).
    """
    nb = shapes.shape[0]
    out = np.zeros((nb, 2))
    ok = np.ones(nb, dtype=np.bool_)
    steps = np.zeros(nb, dtype=np.int64)
    table = _gaussians(max(1, np.max(np.minimum(shapes[:, 0], shapes[:, 1])) if nb else 1))
    done = np.zeros(nb, dtype=np.bool_)
    res = np.zeros((2, 2))
    for i in range(nb):
        if done[i]:
            continue
        m = shapes[i, 0]
        n = shapes[i, 1]
        ip = indptr[ptr_off[i] : ptr_off[i] + m + 1]
        if m == 0 or n == 0 or ip[m] == 0:
            continue
        j = partner[i] if partner.size else -1
        if j < 0:
            ok_i, k_i = _solve_one(data, data, 1, indices, ip, nnz_off[i], m, n, tol, max_steps,
                                   small_side, res, table)  # fmt: skip
            out[i] = res[0]
            ok[i] = ok_i[0]
            steps[i] = k_i[0]
            continue
        a, b, d0, d1 = _pair_lanes(data, nnz_off, i, j, ip[m])
        ok_p, k_p = _solve_one(d0, d1, 2, indices, ip, nnz_off[i], m, n, tol, max_steps,
                               small_side, res, table)  # fmt: skip
        for lane, idx in ((0, a), (1, b)):
            out[idx] = res[lane]
            ok[idx] = ok_p[lane]
            steps[idx] = k_p[lane]
        done[j] = True
    return out, ok, steps


class Block(NamedTuple):
    """Many matrices already concatenated as :func:`pack` lays them out (e.g. the IMDB degree
    groups of one layer, straight from :func:`imdb_groups`): one array per field, not one small
    object per matrix."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    ptr_off: np.ndarray
    nnz_off: np.ndarray
    shapes: np.ndarray

    @property
    def count(self) -> int:
        return int(self.shapes.shape[0])

    def nnzs(self) -> np.ndarray:
        """The stored entries of each matrix (int64)."""
        return self.indptr[self.ptr_off + self.shapes[:, 0]].astype(np.int64)

    @property
    def nnz(self) -> int:
        """The stored entries of all its matrices."""
        return int(self.nnzs().sum())


def job_count(job) -> int:
    """How many matrices a spectral job holds: a :class:`Block`'s count, 1 for one matrix."""
    return job.count if isinstance(job, Block) else 1


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and np.array_equal(a, b))


def _same_pattern(a, b) -> bool:
    """Whether two consecutive :func:`pack` items are the same pattern(s) with other values
    (a layer's binary and weighted matrix, or its binary and weighted IMDB groups)."""
    if isinstance(a, Block) != isinstance(b, Block):
        return False
    if isinstance(a, Block):
        return a.count == b.count and all(
            _same(x, y) for x, y in zip(a[1:], b[1:], strict=True)
        )  # fmt: skip
    k = a.nnz
    return (tuple(a.shape) == tuple(b.shape) and k == b.nnz and _same(a.indptr, b.indptr)
            and _same(a.indices[:k], b.indices[:k]))  # fmt: skip


def pack(mats):
    """Concatenate :class:`~masktopo.analysis._engine.Parts` and :class:`Block` items into
    :func:`top2_batch`'s arrays (a block contributes its matrices in order), with ``partner``:
    an item that has the pattern(s) of the item before it (other values) is solved side by side
    with it (``partner[i] = j``: matrix ``j`` is matrix ``i``'s pattern; ``-1`` otherwise)."""
    shapes_l, nnz_l, data_l, ind_l, ptr_l = [], [], [], [], []
    partner_l: list[np.ndarray] = []
    start, prev = 0, None
    for P in mats:
        count = job_count(P)
        partner_l.append(np.full(count, -1, dtype=np.int64))
        if prev is not None and _same_pattern(prev, P):
            partner_l[-2][:] = np.arange(start, start + count)
            prev = None  # a pair: the next item pairs with neither
        else:
            prev = P
        start += count
        if isinstance(P, Block):
            shapes_l.append(P.shapes)
            nnz_l.append(P.nnzs())
            data_l.append(P.data)
            ind_l.append(P.indices)
            ptr_l.append(P.indptr)
        else:
            shapes_l.append(np.array([P.shape], dtype=np.int64))
            nnz_l.append(np.array([P.nnz], dtype=np.int64))
            data_l.append(P.data[: P.nnz])
            ind_l.append(P.indices[: P.nnz])
            ptr_l.append(P.indptr)
    if not shapes_l:
        z = np.zeros(0, dtype=np.int64)
        return np.zeros(0), np.zeros(0, np.int32), z, z, z, np.zeros((0, 2), dtype=np.int64), z
    shapes = np.concatenate(shapes_l).astype(np.int64, copy=False).reshape(-1, 2)
    nnz = np.concatenate(nnz_l)
    nb = shapes.shape[0]
    nnz_off = np.zeros(nb, dtype=np.int64)
    np.cumsum(nnz[:-1], out=nnz_off[1:])
    ptr_off = np.zeros(nb, dtype=np.int64)
    np.cumsum(shapes[:-1, 0] + 1, out=ptr_off[1:])
    data = np.concatenate(data_l).astype(np.float64, copy=False)
    indices = np.concatenate(ind_l).astype(np.int32, copy=False)
    indptr = np.concatenate(ptr_l).astype(np.int64, copy=False)
    return data, indices, indptr, ptr_off, nnz_off, shapes, np.concatenate(partner_l)


# --------------------------------------------------------------------------------------------
# Layer planning: stripped CSR pattern and IMDB degree groups (masktopo.analysis.metrics)
# --------------------------------------------------------------------------------------------


@_jit
def _flat_kept_words(words, count):
    out = np.empty(count, dtype=np.int64)
    k = 0
    for i in range(words.size):
        x = words[i]
        if x != 0:  # most 8-byte words of a sparse mask are zero: skip them whole
            for j in range(8):
                if (x >> np.uint64(8 * j)) & np.uint64(0xFF):
                    out[k] = 8 * i + j
                    k += 1
    return out[:k]


def flat_kept(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a C-contiguous bool array (int64 positions, ascending), reading
    8 bytes at a time (about twice as fast on sparse masks; assumes little-endian words)."""
    b = np.ascontiguousarray(mask).reshape(-1).view(np.uint8)
    n8 = b.size // 8
    head = _flat_kept_words(b[: 8 * n8].view(np.uint64), int(np.count_nonzero(b[: 8 * n8])))
    if n8 * 8 == b.size:
        return head
    return np.concatenate([head, np.flatnonzero(b[8 * n8 :]) + 8 * n8])


@_jit
def _renumber(deg):
    """New consecutive ids of the nodes with ``deg > 0`` (in order), and how many there are."""
    new = np.empty(deg.size, dtype=np.int64)
    count = 0
    for i in range(deg.size):
        new[i] = count
        if deg[i] > 0:
            count += 1
    return new, count


@_jit
def _walk(flat, n_out, n_in):
    """The column and row (int32) of every entry ``flat`` (ascending row-major positions in
    ``n_out × n_in``) and the row and column degrees. The positions are walked row by row
    (they ascend), so no entry needs a division."""
    E = flat.size
    row_deg = np.zeros(n_out, dtype=np.int64)
    col_deg = np.zeros(n_in, dtype=np.int64)
    col = np.empty(E, dtype=np.int32)
    row = np.empty(E, dtype=np.int32)
    r = 0
    start = 0  # flat position of row r's first entry
    for e in range(E):
        f = flat[e]
        while f - start >= n_in:
            r += 1
            start += n_in
        c = f - start
        col[e] = c
        row[e] = r
        row_deg[r] += 1
        col_deg[c] += 1
    return col, row, row_deg, col_deg


@_jit
def strip_pattern(flat, n_out, n_in):
    """Stripped CSR of the entries ``flat`` (ascending row-major positions in ``n_out × n_in``).

    Rows and columns without an entry are dropped and the rest renumbered in order
    (:func:`_walk`). Returns ``(indices, indptr, n_rows, n_cols)``: the int32 column of every
    entry, int32 ``indptr`` and the stripped shape.
    """
    E = flat.size
    col, _, row_deg, col_deg = _walk(flat, n_out, n_in)
    row_new, n_o = _renumber(row_deg)
    col_new, n_i = _renumber(col_deg)
    indices = np.empty(E, dtype=np.int32)
    indptr = np.zeros(n_o + 1, dtype=np.int32)
    e = 0
    for r in range(n_out):
        k = row_deg[r]
        if k == 0:
            continue
        rn = row_new[r]
        indptr[rn + 1] = indptr[rn] + k
        for _ in range(k):
            indices[e] = col_new[col[e]]
            e += 1
    return indices, indptr, n_o, n_i


@_jit
def _stable_order(values):
    """``argsort(values, kind="stable")``: a counting sort when every value is a small
    non-negative integer (degrees, or sums of multiplicities), else a merge sort."""
    n = values.size
    top = 0.0
    for v in values:
        if v < 0.0 or v != np.floor(v) or v > 4 * n + 1024:
            return np.argsort(values, kind="mergesort")
        top = max(top, v)
    count = np.zeros(int(top) + 2, dtype=np.int64)
    for v in values:
        count[int(v) + 1] += 1
    for i in range(count.size - 1):
        count[i + 1] += count[i]
    order = np.empty(n, dtype=np.int64)
    for j in range(n):
        k = int(values[j])
        order[count[k]] = j
        count[k] += 1
    return order


@_jit
def _sums(indptr, indices, data, n_rows, n_cols):
    """Row and column sums of a CSR matrix, accumulated in storage order (as
    ``numpy.bincount``)."""
    rs = np.zeros(n_rows)
    cs = np.zeros(n_cols)
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            rs[r] += data[p]
            cs[indices[p]] += data[p]
    return rs, cs


@_jit
def _normalized(x, r, c):
    """One entry of the normalized matrix: ``x / sqrt(r c)``."""
    return x / np.sqrt(r * c)


@_jit
def normalized_values(indptr, indices, data, n_rows, n_cols):
    """The values of the normalized matrix ``D_r^{-1/2} B D_c^{-1/2}`` on ``B``'s CSR pattern:
    ``data[p] / sqrt(r_i c_j)`` with ``r``, ``c`` the row and column sums of ``data``. The
    sums accumulate in storage order, as ``numpy.bincount`` does: the same bits as the numpy
    expression, in two passes and no temporaries."""
    rs, cs = _sums(indptr, indices, data, n_rows, n_cols)
    out = np.empty(indptr[n_rows])
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            out[p] = _normalized(data[p], rs[r], cs[indices[p]])
    return out


@_jit
def is_normalized_pattern(indptr, indices, data, n_rows, n_cols):
    """Whether ``data`` is, bit for bit, :func:`normalized_values` of the *binary* pattern
    (every stored entry 1): ``data[p] = 1/sqrt(r_i c_j)`` with ``r``, ``c`` the degrees. One
    pass over the entries after the degrees (sums of ones: exact integers, whatever the order),
    no temporaries; stops at the first difference."""
    rs = np.zeros(n_rows)
    cs = np.zeros(n_cols)
    for r in range(n_rows):
        rs[r] = indptr[r + 1] - indptr[r]
        for p in range(indptr[r], indptr[r + 1]):
            cs[indices[p]] += 1.0
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            if data[p] != _normalized(1.0, rs[r], cs[indices[p]]):
                return False
    return True


@_jit
def count_components(indptr, indices, n_rows, n_cols):
    """Connected components of the bipartite graph of a CSR pattern (``n_rows`` row nodes,
    ``n_cols`` column nodes, an edge per stored entry; isolated nodes count as components of
    their own), by union–find with path compression (:func:`_union_find`): O(|E| α) time, one
    int64 per node."""
    parent = _union_find(indices, indptr, 0, n_rows, n_cols)
    count = 0
    for x in range(n_rows + n_cols):
        if parent[x] == x:
            count += 1
    return count


@_jit
def _group_rows(used, n_r, mark, tag, n_rows, cutoff, remap):
    """A group's rows (``used[:n_r]``, marked ``tag`` in ``mark``) renumbered in order into
    ``remap``: a sort of the rows used when they are few (``n_r (log₂ n_r + 1) < cutoff``),
    else a scan of the marks of all ``n_rows`` rows (the same numbering)."""
    if n_r * (np.log2(n_r) + 1.0) < cutoff:
        rs = np.sort(used[:n_r])
        for i in range(n_r):
            remap[rs[i]] = i
    else:
        i = 0
        for r in range(n_rows):
            if mark[r] == tag:
                remap[r] = i
                i += 1


@_jit
def _cut_groups(key, start, stop, crow, ceid, n_rows, cutoff, min_group, both_three):
    """The IMDB groups of columns ordered by fan-out (:func:`imdb_groups`,
    :func:`position_groups`): ordered column ``t`` has fan-out ``key[t]`` and its rows
    (ascending) at ``crow[start[t]:stop[t]]`` (pattern entries ``ceid[…]``, or none when
    ``ceid`` is empty); a run of equal keys is one group, kept when ``d ≥ 3``, it has at least
    ``min_group`` columns, touches ``n_r ≥ 2`` of the ``n_rows`` rows and passes the gate. Its
    rows are renumbered in order (:func:`_group_rows`, ``cutoff``). Returns the group count,
    the used lengths of ``g_indptr`` and ``g_indices``, and the arrays of :func:`imdb_groups`."""
    nc = key.size
    g_d = np.empty(nc)
    g_size = np.empty(nc, dtype=np.int64)
    g_nr = np.empty(nc, dtype=np.int64)
    ptr_off = np.empty(nc, dtype=np.int64)
    nnz_off = np.empty(nc, dtype=np.int64)
    g_indptr = np.empty(2 * nc + 1, dtype=np.int32)
    g_indices = np.empty(crow.size, dtype=np.int32)
    g_eid = np.empty(g_indices.size if ceid.size else 0, dtype=np.int64)
    mark = np.full(n_rows, -1, dtype=np.int64)
    remap = np.empty(n_rows, dtype=np.int32)
    used = np.empty(n_rows + 1, dtype=np.int64)  # (one slot more: written before counted)
    ng = 0
    pp = 0
    ee = 0
    a = 0
    while a < nc:
        d = key[a]
        b = a + 1
        while b < nc and key[b] == d:
            b += 1
        size = b - a
        if d >= 3 and size >= min_group:  # both gates need d ≥ 3: skip the others' row count
            n_r = 0
            for t in range(a, b):
                for q in range(start[t], stop[t]):  # without a branch: a new row is unpredictable
                    r = crow[q]
                    used[n_r] = r
                    n_r += mark[r] != a
                    mark[r] = a
            d_out = d * size / n_r
            ok = d_out >= 3 if both_three else d_out > 1
            if ok and n_r >= 2:
                _group_rows(used, n_r, mark, a, n_rows, cutoff, remap)
                g_d[ng] = d
                g_size[ng] = size
                g_nr[ng] = n_r
                ptr_off[ng] = pp
                nnz_off[ng] = ee
                g_indptr[pp] = 0
                k = 0
                for t in range(a, b):
                    for q in range(start[t], stop[t]):
                        g_indices[ee + k] = remap[crow[q]]
                        if ceid.size:
                            g_eid[ee + k] = ceid[q]
                        k += 1
                    pp += 1
                    g_indptr[pp] = k
                pp += 1
                ee += k
                ng += 1
        a = b
    return ng, pp, ee, g_d, g_size, g_nr, g_indptr, g_indices, g_eid, ptr_off, nnz_off


@_jit
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
    order = _stable_order(fan)  # columns by fan-out, in column order within a group
    start = np.empty(n_cols, dtype=np.int64)
    stop = np.empty(n_cols, dtype=np.int64)
    for t in range(n_cols):
        start[t] = cnt[order[t]]
        stop[t] = cnt[order[t] + 1]
    ng, pp, ee, g_d, g_size, g_nr, g_indptr, g_indices, g_eid, ptr_off, nnz_off = _cut_groups(
        fan[order], start, stop, crow, ceid, n_rows, n_rows, min_group, both_three
    )
    return (g_d[:ng], g_size[:ng], g_nr[:ng], g_indptr[:pp], g_indices[:ee], g_eid[:ee],
            ptr_off[:ng], nnz_off[:ng])  # fmt: skip


@_jit
def position_groups(flat, n_out, n_in, min_group, both_three):
    """:func:`strip_pattern` then :func:`imdb_groups` of a binary pattern, straight from its
    kept positions and without the stripped CSR (what the lean ranking pass needs): the same
    groups, the same concatenated CSR pieces, in fewer passes over the entries.

    ``flat``: ascending row-major positions in ``n_out × n_in``. Rows and columns without an
    entry need no renumbering here: a group's rows are renumbered in order among its own rows
    (the stripped numbering keeps the order), and an empty column is in no group (``d ≥ 3``).

    Returns ``(n_rows, n_cols, d, size, n_r, g_indptr, g_indices, ptr_off, nnz_off)``: the
    stripped shape and :func:`imdb_groups`'s results but ``g_eid`` (a binary pattern's group
    values are all ones).
    """
    E = flat.size
    col, row, row_deg, col_deg = _walk(flat, n_out, n_in)
    n_o = 0
    for i in range(n_out):
        if row_deg[i] > 0:
            n_o += 1
    # the columns of fan-out ≥ 3 ordered by fan-out, in column order within one (a counting
    # sort: _stable_order's order restricted to them), and where each one's rows start
    top = 0
    n_i = 0
    for c in range(n_in):
        if col_deg[c] > 0:
            n_i += 1
        top = max(top, col_deg[c])
    count = np.zeros(top + 2, dtype=np.int64)
    for c in range(n_in):
        if col_deg[c] >= 3:
            count[col_deg[c] + 1] += 1
    for i in range(top + 1):
        count[i + 1] += count[i]
    nc = count[top + 1]
    order = np.empty(nc, dtype=np.int64)
    for c in range(n_in):
        k = col_deg[c]
        if k >= 3:
            order[count[k]] = c
            count[k] += 1
    first = np.empty(n_in, dtype=np.int64)  # where column c's rows start, in order
    fill = 0
    for t in range(nc):
        c = order[t]
        first[c] = fill
        fill += col_deg[c]
    step = np.zeros(n_in, dtype=np.int64)  # 1 for those columns; the others write to a spare
    for c in range(n_in):
        if col_deg[c] >= 3:
            step[c] = 1
        else:
            first[c] = fill
    grow = np.empty(fill + 1, dtype=np.int32)  # the rows of those columns, ascending in each
    for e in range(E):  # without a branch (fan-outs below 3 are common at these densities)
        c = col[e]
        grow[first[c]] = row[e]
        first[c] += step[c]
    grow = grow[:fill]
    key = np.empty(nc)
    start = np.empty(nc, dtype=np.int64)
    stop = np.empty(nc, dtype=np.int64)
    q = 0
    for t in range(nc):
        key[t] = col_deg[order[t]]
        start[t] = q
        q += col_deg[order[t]]
        stop[t] = q
    ng, pp, ee, g_d, g_size, g_nr, g_indptr, g_indices, _, ptr_off, nnz_off = _cut_groups(
        key, start, stop, grow, np.empty(0, dtype=np.int64), n_out, n_o, min_group, both_three
    )
    return (n_o, n_i, g_d[:ng], g_size[:ng], g_nr[:ng], g_indptr[:pp], g_indices[:ee],
            ptr_off[:ng], nnz_off[:ng])  # fmt: skip


def unpack(packed, i):
    """Matrix ``i`` of :func:`pack`'s arrays as ``(data, indices, indptr, shape)``."""
    data, indices, indptr, ptr_off, nnz_off, shapes = packed[:6]
    m, n = (int(x) for x in shapes[i])
    ip = indptr[ptr_off[i] : ptr_off[i] + m + 1]
    e0 = int(nnz_off[i])
    sl = slice(e0, e0 + int(ip[-1]))
    return data[sl], indices[sl], ip.astype(np.int32), (m, n)


def kernel_cache_is_cold() -> bool:
    """Whether the next call of the spectral kernel (:func:`top2_batch`) compiles it first.

    numba compiles the kernels on first use and caches the result on disk (``cache=True``: in
    the ``__pycache__`` folder next to this file, or numba's user cache folder when that one is
    not writable). The cache is cold when it holds no build of :func:`top2_batch` for this
    source file (its size and modification time), this numba version and this CPU, and this
    process has not compiled or loaded it yet. Used by the command line for its one-line notice
    (library calls say nothing); False when it cannot tell (JIT disabled, other numba internals).
    """
    try:
        if top2_batch.signatures:  # already compiled or loaded by this process
            return False
        index = top2_batch._cache._cache_file._load_index()  # {} when missing or stale
        magic = top2_batch.targetctx.codegen().magic_tuple()
        return not any(key[1] == magic for key in index)
    except Exception:  # numba internals differ: say nothing rather than fail
        return False


# --------------------------------------------------------------------------------------------
# Ranking: rigorous two-sided bounds on σ₁, σ₂ from a few Lanczos steps (masktopo.pags)
# --------------------------------------------------------------------------------------------


@_jit
def _collatz_wielandt(data, indices, indptr, e0, m, n, rows_side, dim, y, x, w, v, tmp, unit):
    """An upper bound on ``λ₁(G)`` of the non-negative Gram operator ``G`` (``BBᵀ`` or ``BᵀB``
    of a matrix with non-negative values): ``max_i (G w)_i / w_i`` for the positive vector
    ``w = G x``, ``x = |y| + δ`` (Collatz–Wielandt [HJ13]_ Thm 8.1.26: for a non-negative
    matrix and any positive vector, the largest ratio bounds the spectral radius from above).
    ``y`` is the top Ritz vector; the one power step makes ``w`` closer to the Perron vector.
    Rows of a stripped pattern have an entry, so ``G_ii > 0`` and ``w > 0``."""
    top = 0.0
    for i in range(dim):
        top = max(top, abs(y[i]))
    delta = 1e-6 * top if top > 0.0 else 1.0
    for i in range(dim):
        x[i] = abs(y[i]) + delta
    _apply(data, indices, indptr, e0, m, n, rows_side, x, tmp, w, unit)
    _apply(data, indices, indptr, e0, m, n, rows_side, w, tmp, v, unit)
    bound = 0.0
    for i in range(dim):
        if w[i] > 0.0:
            bound = max(bound, v[i] / w[i])
        elif v[i] > 0.0:  # pragma: no cover - impossible on a stripped pattern
            return np.inf
    return bound


@_jit
def _bounds_one(data, indices, indptr, e0, m, n, tol, max_steps, small_side, lo, hi, table,
                upper):  # fmt: skip
    """Bounds ``lo ≤ σ ≤ hi`` on σ₁, σ₂ of one matrix; returns the Lanczos steps taken.

    Small matrices (smaller side ``≤ small_side``, or rank one) are solved exactly by the same
    code as :func:`top2_batch` (``lo = hi``). Otherwise a Lanczos run of at most ``max_steps``
    steps (or to a residual of ``tol·θ₁``) on the whole matrix gives the top two Ritz vectors
    ``W``; ``lo`` are the singular values of ``BᵀW`` (``BW``), which are lower bounds for any
    orthonormal ``W`` (Cauchy interlacing [GV13]_ Thm 8.1.7); ``hi[0]`` is the Collatz–Wielandt
    bound :func:`_collatz_wielandt` and ``hi[1] = hi[0]`` (σ₂ ≤ σ₁: no cheaper rigorous upper
    bound on σ₂ is known). With ``upper`` False the Collatz–Wielandt pass (two products) is
    replaced by the cheaper and looser ``σ₁ ≤ √(‖B‖₁‖B‖∞)`` (one pass over the entries), for
    callers that need the lower bounds and the Ritz estimates above all.
    """
    L = np.empty((2, 1, 2))
    K = _bounds_lanes(data, data, 1, indices, indptr, e0, m, n, tol, np.array([max_steps]),
                      small_side, L[0], L[1], table, upper)  # fmt: skip
    lo[0], lo[1], hi[0], hi[1] = L[0, 0, 0], L[0, 0, 1], L[1, 0, 0], L[1, 0, 1]
    return K[0]


@_jit
def _bounds_lanes(data, data1, nl, indices, indptr, e0, m, n, tol, max_steps, small_side, lo, hi,
                  table, upper):  # fmt: skip
    """:func:`_bounds_one` of ``nl`` (1 or 2) matrices with one pattern and the values ``data``,
    ``data1`` (lane ``l``: at most ``max_steps[l]`` steps, bounds into ``lo[l]``, ``hi[l]``): their
    Lanczos runs side by side (:func:`_lanczos`: one traversal for both products while both
    run), each lane the same bits as alone. Returns the Lanczos steps per lane."""
    K = np.zeros(nl, dtype=np.int64)
    rows_side = m <= n
    dim = m if rows_side else n
    if dim == 1 or dim <= small_side:
        _solve_connected(data, data1, nl, indices, indptr, e0, m, n, tol, 0, small_side, lo,
                         table)  # fmt: skip
        for lane in range(nl):
            hi[lane, 0] = lo[lane, 0]
            hi[lane, 1] = lo[lane, 1]
        return K
    steps = np.minimum(max_steps, dim)
    Y = np.empty((2, nl, dim))
    _, K = _lanczos(data, data1, nl, indices, indptr, e0, m, n, rows_side, dim, tol, steps,
                    table[:dim], Y[0], Y[1])  # fmt: skip
    _lane_bounds(data, data1, nl, indices, indptr, e0, m, n, Y, lo, hi, upper)
    return K


@_jit
def _lane_bounds(data, data1, nl, indices, indptr, e0, m, n, Y, lo, hi, upper):
    """:func:`_bounds_lanes`'s bounds of every lane from its top two Ritz vectors ``Y[0, l]``,
    ``Y[1, l]`` (overwritten)."""
    rows_side = m <= n
    dim = m if rows_side else n
    other = n if rows_side else m
    for lane in range(nl):
        values = data if lane == 0 else data1
        y1 = Y[0, lane]
        y2 = Y[1, lane]
        if not upper:
            _ritz2(values, indices, indptr, e0, m, n, rows_side, dim, y1, y2, lo[lane])
            # σ₁² ≤ ‖B‖₁‖B‖∞ (the largest column sum times the largest row sum; [HJ13]_ §5.6)
            row_max = 0.0
            col = np.zeros(n)
            for r in range(m):
                acc = 0.0
                for p in range(indptr[r], indptr[r + 1]):
                    acc += values[e0 + p]
                    col[indices[e0 + p]] += values[e0 + p]
                row_max = max(row_max, acc)
            hi[lane, 0] = max(np.sqrt(row_max * np.max(col)), lo[lane, 0])
        else:
            x = np.empty(dim)
            v = np.empty(dim)
            z = np.empty(dim)
            tmp = np.empty(other)
            unit = _is_unit(values, e0, indptr[m])
            lam = _collatz_wielandt(values, indices, indptr, e0, m, n, rows_side, dim, y1, x, z,
                                    v, tmp, unit)  # fmt: skip
            _ritz2(values, indices, indptr, e0, m, n, rows_side, dim, y1, y2, lo[lane])
            hi[lane, 0] = max(np.sqrt(lam), lo[lane, 0])
        hi[lane, 1] = hi[lane, 0]


@_jit
def _bounds_resume(Q, state, ones, indices, indptr, e0, m, n, tol, steps, lo, hi, upper):
    """:func:`_bounds_one` of a binary matrix (``ones``: its values, all 1) whose Lanczos run is
    ``(Q, state)`` (:func:`_lanczos_start`, one lane): the run taken on to ``steps`` steps
    (resumed when it stopped at a smaller budget), then its bounds. Returns the basis and the
    steps taken."""
    rows_side = m <= n
    dim = m if rows_side else n
    budget = np.array([steps])
    Q = _lanczos_run(Q, state, ones, ones, 1, indices, indptr, e0, m, n, rows_side, dim, tol,
                     budget)  # fmt: skip
    Y = np.empty((2, 1, dim))
    _lanczos_vectors(Q, state, 1, dim, Y[0], Y[1])
    _lane_bounds(ones, ones, 1, indices, indptr, e0, m, n, Y, lo, hi, upper)
    return Q, state[_STEPS][0]


@_jit
def top2_bounds_batch(data, indices, indptr, ptr_off, nnz_off, shapes, partner, tol, max_steps,
                      small_side, upper=True):  # fmt: skip
    """Rigorous bounds on σ₁, σ₂ of every matrix (arguments as :func:`top2_batch`, partners
    bounded side by side; values must be non-negative): ``(lo, hi, steps)``, ``lo`` and ``hi``
    ``(nb, 2)`` with
    ``lo ≤ σ ≤ hi`` up to rounding (the caller widens them by a margin). ``max_steps`` is the
    ranking budget (a few dozen steps rather than convergence); see :func:`_bounds_one`.
    ``upper=False``: the looser upper bound ``σ₂ ≤ σ₁ ≤ √(‖B‖₁‖B‖∞)`` instead of the
    Collatz–Wielandt one (small matrices are still exact), two matrix products fewer.

    References
    ----------
    .. [HJ13] R. A. Horn, C. R. Johnson, *Matrix Analysis*, 2nd ed., Cambridge, 2013, §8.1
       (Collatz–Wielandt).
    """
    nb = shapes.shape[0]
    lo = np.zeros((nb, 2))
    hi = np.zeros((nb, 2))
    steps = np.zeros(nb, dtype=np.int64)
    table = _gaussians(max(1, np.max(np.minimum(shapes[:, 0], shapes[:, 1])) if nb else 1))
    done = np.zeros(nb, dtype=np.bool_)
    L = np.zeros((2, 2, 2))
    budget = np.array([max_steps, max_steps])
    for i in range(nb):
        if done[i]:
            continue
        m = shapes[i, 0]
        n = shapes[i, 1]
        ip = indptr[ptr_off[i] : ptr_off[i] + m + 1]
        if m == 0 or n == 0 or ip[m] == 0:
            continue
        j = partner[i] if partner.size else -1
        if j < 0:
            steps[i] = _bounds_one(data, indices, ip, nnz_off[i], m, n, tol, max_steps,
                                   small_side, lo[i], hi[i], table, upper)  # fmt: skip
            continue
        a, b, d0, d1 = _pair_lanes(data, nnz_off, i, j, ip[m])
        K = _bounds_lanes(d0, d1, 2, indices, ip, nnz_off[i], m, n, tol, budget, small_side,
                          L[0], L[1], table, upper)  # fmt: skip
        for lane, idx in ((0, a), (1, b)):
            lo[idx] = L[0, lane]
            hi[idx] = L[1, lane]
            steps[idx] = K[lane]
        done[j] = True
    return lo, hi, steps


@_jit
def rank_layer(pos, n_out, n_in, w, min_group, both_three, steps, other_steps, tol, small_side,
               upper, table, lean, first, floor, rule):  # fmt: skip
    """The ranking pass of one unit-valued layer in one call: :func:`strip_pattern`,
    :func:`imdb_groups` and :func:`_bounds_one` on its matrices, with nothing concatenated
    (what :func:`pack` and :func:`top2_bounds_batch` do for many layers at once, from the same
    arrays: the bounds are the same bits).

    ``pos``: ascending flat positions of the kept entries of the ``n_out × n_in`` biadjacency
    (every value 1); ``w``: ``|W|`` at them (float64). The matrices, in order: the binary
    pattern, the weighted one, the IMDB groups' binary matrices, then their weighted ones. The
    groups' binary matrices get ``steps`` Lanczos steps, the others ``other_steps``; ``table``
    holds the start vector (:func:`_gaussians` of at least the larger side). ``lean``: only the
    groups' binary matrices (the others' rows stay 0, with 0 steps; ``w`` is not read), each the
    same bits as with the others beside it.

    ``lean`` with ``0 < first < steps``: the groups get ``first`` steps, then the layer's
    ``IMDB_Δr`` upper bound is compared with ``floor`` (``rule``: ``(cheeger, margin,
    sv_floor, floor_margin)``, as :mod:`masktopo.analysis.ranking` evaluates it: the Cheeger
    weights of the N23 variant when ``cheeger`` is 1, else 1; each σ₂ lower bound widened by
    ``margin`` of σ₁'s upper bound and read as 0 below ``10·sv_floor`` of it). Unless the bound
    is below ``floor − floor_margin·max(1, |floor|)`` (``floor`` +∞: always; NaN: never), the
    groups that stopped at ``first`` steps without converging are resumed to ``steps``
    (:func:`_lanczos_run`: the recurrence of a single run of ``steps``; its bounds agree with
    that run's to rounding).

    Returns ``(n_rows, n_cols, d, size, n_r, lo, hi, nsteps, est)``: the stripped shape, the
    kept groups (degree, column count, row count), per matrix the bounds and Lanczos steps,
    and the lower bounds after the first pass (``lo`` itself with a single pass), the rows'
    estimates whatever the floor.
    """
    E = pos.size
    ones = np.ones(E)  # the binary values, of the pattern and of every group (E entries at most)
    if lean:  # the groups alone, without the stripped CSR (the same groups)
        n_o, n_i, d, size, n_r, g_indptr, g_indices, ptr_off, nnz_off = position_groups(
            pos, n_out, n_in, min_group, both_three
        )
        g_eid = np.empty(0, dtype=np.int64)
        indices = np.empty(0, dtype=np.int32)
        indptr = np.zeros(1, dtype=np.int32)
    else:
        indices, indptr, n_o, n_i = strip_pattern(pos, n_out, n_in)
        d, size, n_r, g_indptr, g_indices, g_eid, ptr_off, nnz_off = imdb_groups(
            indptr, indices, ones, n_o, n_i, min_group, both_three
        )
    ng = d.size
    lo = np.zeros((2 + 2 * ng, 2))
    hi = np.zeros((2 + 2 * ng, 2))
    nsteps = np.zeros(2 + 2 * ng, dtype=np.int64)
    if E == 0:
        return n_o, n_i, d, size, n_r, lo, hi, nsteps, lo
    if lean:
        est = _rank_groups(g_indptr, g_indices, ptr_off, nnz_off, d, size, n_r, ones, steps,
                           first, tol, small_side, upper, table, floor, rule, lo, hi, nsteps)  # fmt: skip
        return n_o, n_i, d, size, n_r, lo, hi, nsteps, est
    ostep = min(steps, other_steps)
    gw = np.empty(g_eid.size)
    for k in range(gw.size):
        gw[k] = w[g_eid[k]]
    # Each pattern's binary and weighted matrix side by side (one traversal for both products
    # while both run): each matrix's bounds are the same bits as on its own.
    L = np.empty((2, 2, 2))
    budget = np.array([steps, ostep])
    for g in range(ng):  # the groups
        ip = g_indptr[ptr_off[g] : ptr_off[g] + size[g] + 1]
        K = _bounds_lanes(ones, gw, 2, g_indices, ip, nnz_off[g], size[g], n_r[g], tol, budget,
                          small_side, L[0], L[1], table, upper)  # fmt: skip
        for lane in range(2):
            j = 2 + g + lane * ng
            lo[j] = L[0, lane]
            hi[j] = L[1, lane]
            nsteps[j] = K[lane]
    budget[0] = ostep  # the whole pattern, binary and weighted
    K = _bounds_lanes(ones, w, 2, indices, indptr, 0, n_o, n_i, tol, budget, small_side, L[0],
                      L[1], table, upper)  # fmt: skip
    for lane in range(2):
        lo[lane] = L[0, lane]
        hi[lane] = L[1, lane]
        nsteps[lane] = K[lane]
    return n_o, n_i, d, size, n_r, lo, hi, nsteps, lo


@_jit
def _rank_groups(g_indptr, g_indices, ptr_off, nnz_off, d, size, n_r, ones, steps, first, tol,
                 small_side, upper, table, floor, rule, lo, hi, nsteps):  # fmt: skip
    """:func:`rank_layer`'s ``lean`` pass over the IMDB groups' binary matrices (rows ``2 + g``
    of ``lo``, ``hi``, ``nsteps``), with the ``first``-step pass and the floor described there.
    Returns the estimates (the first pass's lower bounds)."""
    ng = d.size
    two = 0 < first < steps
    short = first if two else steps
    L = np.empty((2, 1, 2))
    runs = []  # (group, basis, state) of the Lanczos runs that may be resumed
    for g in range(ng):
        ip = g_indptr[ptr_off[g] : ptr_off[g] + size[g] + 1]
        m = size[g]
        n = n_r[g]
        dim = min(m, n)
        if dim == 1 or dim <= small_side:
            K = _bounds_lanes(ones, ones, 1, g_indices, ip, nnz_off[g], m, n, tol,
                              np.array([short]), small_side, L[0], L[1], table, upper)  # fmt: skip
            k = K[0]
        else:
            Q, state = _lanczos_start(1, dim, max(m, n), min(steps, dim),
                                      np.array([min(short, dim)]), table[:dim])  # fmt: skip
            Q, k = _bounds_resume(Q, state, ones, g_indices, ip, nnz_off[g], m, n, tol, short,
                                  L[0], L[1], upper)  # fmt: skip
            if two and not state[_OK][0]:
                runs.append((g, Q, state))
        lo[2 + g] = L[0, 0]
        hi[2 + g] = L[1, 0]
        nsteps[2 + g] = k
    if not two:
        return lo
    est = lo.copy()
    if not runs or floor == np.inf:
        return est
    acc = 0.0  # the layer's IMDB_Δr upper bound
    margin = rule[1]
    for g in range(ng):
        top = hi[2 + g, 0]
        s2 = max(0.0, lo[2 + g, 1] * (1.0 - margin) - margin * top)
        if s2 < 10.0 * rule[2] * top:
            s2 = 0.0
        ns = float(size[g])
        nr = float(n_r[g])
        c = max(ns, nr) / (ns + nr - 1.0) if rule[0] == 1.0 else 1.0
        acc += c * (np.sqrt(d[g] - 1.0) + np.sqrt(d[g] * ns / nr - 1.0) - s2)
    if acc / ng < floor - rule[3] * max(1.0, abs(floor)):
        return est
    for g, Q, state in runs:
        ip = g_indptr[ptr_off[g] : ptr_off[g] + size[g] + 1]
        _, k = _bounds_resume(Q, state, ones, g_indices, ip, nnz_off[g], size[g], n_r[g], tol,
                              steps, L[0], L[1], upper)  # fmt: skip
        lo[2 + g] = L[0, 0]
        hi[2 + g] = L[1, 0]
        nsteps[2 + g] = k
    return est
