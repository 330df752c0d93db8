r"""The dense route of the CPU engine: σ₁, σ₂ of large matrices at 30–70 % density by block
Krylov with dense BLAS products (docs/llm.md, docs/performance.md).

The compiled engine (:mod:`masktopo.analysis._kernels`) runs single-vector Lanczos on CSR
arrays: one sparse product per step, built for ~1 % density. At 50 % density a 4096 × 11008 layer
has 22 M edges, CSR costs 12 bytes an edge plus a gather per edge, and σ₂ sits at the edge of the
bulk of the spectrum, next to σ₃, so Lanczos needs hundreds of steps. Here the matrix is held
dense (float64) and multiplied with a *block* of :data:`BLOCK` vectors at once (BLAS GEMM: 5–10
times the flops per second of a matrix–vector product), and the block Krylov space converges at
a rate set by the gap between σ₂² and σ_{b+1}² rather than σ₃² ([GU77]_, [MM15]_): a few dozen
block steps.

Method, on the Gram operator of the smaller side, ``A = BBᵀ`` (or ``BᵀB``), with ``s`` that
side's size:

1. ``Q₀``: an orthonormal basis of a seeded Gaussian ``s × b`` block;
2. step ``j``: ``P_j = A Q_j`` (two GEMMs with ``B``), the Rayleigh quotient ``T = VᵀAV`` of the
   basis ``V = [Q₀ … Q_j]`` extended by ``V ᵀ P_j``; the top two eigenpairs ``(θᵢ, yᵢ)`` of ``T``;
   the residuals ``‖A V yᵢ − θᵢ V yᵢ‖ = ‖P yᵢ − θᵢ V yᵢ‖`` (explicit, not a recurrence);
3. stop when both residuals are at most ``TOL·θ₁`` (``TOL·σ₁²``, the compiled engine's test),
   else orthogonalize ``P_j`` against ``V`` twice (CGS2, full reorthogonalization), take its QR
   factor as ``Q_{j+1}`` and go on;
4. a Rayleigh–Ritz step on ``B`` itself: σ₁, σ₂ are the singular values of ``Bᵀ U`` (or
   ``B U``), ``U = V [y₁ y₂]`` orthonormal, which gives small σ to an absolute ``ε·σ₁`` as the
   compiled engine's final step does.

**The Gram matrix, when the run will be long.** A step's two GEMMs read all of ``B`` and are
bound by memory bandwidth (a block of 16 vectors does ~2 flops per byte); forming
``A = BBᵀ`` once is a compute-bound ``syrk`` (threaded where BLAS may use several cores; the
analysis pipeline runs BLAS single-threaded in each of its two threads), after which a step is one
``s × s`` product (5–7 times cheaper for 4096 × 11008). From the third step on, the residual's
rate of decrease predicts the steps still needed; when they would cost more than the Gram matrix
(:data:`GRAM_STEPS`, in steps of the matrix), the Gram matrix is formed and the run continues
on it (the same Krylov space: ``A Q = B(BᵀQ)`` in exact arithmetic). Integer entries whose
products cannot exceed float32's exact integers (a binary pattern: ``max|b|²·l < 2²⁴``) give
an *exact* Gram matrix in float32, at about half the float64 cost; the others are formed in
float64. The final Rayleigh–Ritz step (4) still reads ``B``.

**Ritz pairs when due.** The eigenproblem of ``T`` in step 2 grows with the basis and soon costs
more than a step on the Gram matrix, so after the third step it is solved again only halfway to
the end the rate predicts (at most :data:`MAX_SKIP` steps on), or at once when the new block is
small against ``P`` (:data:`NEAR_INVARIANT`: near an invariant subspace, where a basis grown
further would lose orthogonality). The stopping test is the same; it is only applied less often.

A Krylov space that stops growing (the matrix has rank below the basis) is an invariant
subspace: its Ritz values are exact, and the iteration stops there.

References
----------
.. [GU77] G. H. Golub, R. Underwood, "The block Lanczos method for computing eigenvalues",
   Mathematical Software III, 1977.
.. [MM15] C. Musco, C. Musco, "Randomized block Krylov methods for stronger and faster
   approximate singular value decomposition", NeurIPS 2015.
"""

from __future__ import annotations

import math

import numpy as np

from ..threads import one_blas_thread

#: Vectors per block: GEMM reaches most of its speed at 16 (docs/performance.md).
BLOCK = 16
#: Block steps before giving up (the caller then uses the compiled engine).
MAX_BLOCKS = 80
#: Seed of the start block (results are deterministic).
SEED = 0x5EED
#: What forming the Gram matrix costs, in block steps with ``B`` (float32 exact, float64);
#: measured on 4096 × 11008 at 50 % (2-core Xeon, 2026-12-03: a step 0.17 s, the float32 Gram
#: 1.8 s, the float64 one 3.0 s on one thread; docs/performance.md "LLM layers"). The Gram matrix
#: is formed when the predicted remaining steps would cost more than this plus the cheaper steps.
GRAM_STEPS = {"float32": 11.0, "float64": 18.0}
#: A step on the Gram matrix, as a fraction of a step with ``B`` (the same measurement: ~0.2).
GRAM_STEP_COST = 0.2
#: Smaller sides than this never form the Gram matrix (their steps are cheap).
GRAM_MIN_SIDE = 512
#: A run whose larger relative residual is still above this after this many block steps forms
#: the Gram matrix at once, without waiting for a rate: σ₂ is then at the edge of the bulk of
#: the spectrum (a random pattern at 30–70 % density: ~1e-3 after 2 steps, then 30+ more), while
#: a well separated σ₂ is near the tolerance by then (a low-rank matrix: ~1e-6).
EARLY_GRAM_STEP = 2
EARLY_GRAM_RESIDUAL = 1e-4
#: A new block column smaller than this, relative to the largest of ``A Q``, marks a Krylov
#: space near an invariant subspace: the Ritz pairs are then checked at once.
NEAR_INVARIANT = 1e-6
#: The most steps taken between two computations of the Ritz pairs.
MAX_SKIP = 8
#: Columns of ``B`` per float32 chunk of the exact Gram matrix (bounds the copy to ~32 MB).
GRAM_CHUNK = 2048


def float32_exact(max_abs: float, length: int) -> bool:
    """Whether the Gram matrix of an integer matrix whose entries are at most ``max_abs`` in
    magnitude, ``length`` of them a row, is exact in float32: ``max_abs²·length < 2²⁴``, so
    that every partial sum of every entry is an integer float32 holds."""
    return max_abs * max_abs * length < 2.0**24


def _gram_dtype(A: np.ndarray) -> str:
    """``"float32"`` when ``A Aᵀ`` is exact in float32 (integer entries,
    :func:`float32_exact`); else ``"float64"``. Read a chunk of columns at a time (no copy of
    ``A``)."""
    big = 0.0
    for c in range(0, A.shape[1], GRAM_CHUNK):
        a = A[:, c : c + GRAM_CHUNK]
        if not np.array_equal(a, np.round(a)):
            return "float64"
        big = max(big, float(np.abs(a).max(initial=0.0)))
    return "float32" if float32_exact(big, A.shape[1]) else "float64"


def gram(A: np.ndarray, dtype: str | None = None) -> np.ndarray:
    """``A Aᵀ`` (float64, symmetric), exact when ``dtype`` is ``"float32"`` (see
    :func:`_gram_dtype`, which chooses when ``dtype`` is None): float32 ``syrk`` over chunks of
    :data:`GRAM_CHUNK` columns, summed in float32 (exact: integers below 2²⁴)."""
    dtype = dtype or _gram_dtype(A)
    if dtype == "float64":
        return A @ A.T  # numpy sees A @ A.T and calls syrk
    s, l = A.shape
    G = np.zeros((s, s), dtype=np.float32)
    for c in range(0, l, GRAM_CHUNK):
        Ac = A[:, c : c + GRAM_CHUNK].astype(np.float32)
        G += Ac @ Ac.T
    return G.astype(np.float64)


@one_blas_thread(scipy_linalg=True)
def top2_dense(D, tol: float, *, block: int = BLOCK, max_blocks: int = MAX_BLOCKS,
               gram_dtype: str | None = None, G: np.ndarray | None = None,
               ) -> tuple[np.ndarray, bool, int]:  # fmt: skip
    """σ₁, σ₂ of a dense float64 matrix by block Krylov (module docstring).

    Parameters
    ----------
    D : numpy.ndarray or scipy.sparse matrix
        ``m × n`` float64 (C or Fortran order; not copied). Sparse only with ``G``: it is then
        read once, by the final Rayleigh–Ritz step.
    tol : float
        Residual tolerance relative to σ₁² (:data:`masktopo.analysis._engine.TOL`).
    block, max_blocks : int
        Block size and the most block steps.
    gram_dtype : {"float32", "float64"}, optional
        The dtype of the Gram matrix if one is formed, when the caller knows it (``"float32"``
        only where it is exact: :func:`_gram_dtype`, which reads ``D`` when this is None).
    G : numpy.ndarray, optional
        The Gram matrix of the smaller side (``DDᵀ`` or ``DᵀD``, float64), when the caller has
        it cheaply (:func:`masktopo.analysis._bitgram.pattern_gram`): every step is then a
        product with it, from the first.

    Returns
    -------
    (numpy.ndarray, bool, int)
        σ₁, σ₂ (float64, descending; zero-padded for rank below 2), whether the residual test
        was met, and the block steps taken.
    """
    A = D if D.shape[0] <= D.shape[1] else D.T  # s × l, s ≤ l: the Gram operator A Aᵀ on R^s
    s = A.shape[0]
    b = max(2, min(block, s))
    cap = min(s, b * max_blocks)
    V = np.empty((s, cap), order="F")  # the basis, filled a block at a time
    PA = np.empty((s, cap), order="F")  # A Aᵀ V
    T = np.zeros((cap, cap))
    rng = np.random.default_rng(SEED)
    Q, _ = np.linalg.qr(rng.standard_normal((s, b)))
    k = 0
    converged = False
    steps = 0
    top = np.zeros((0, 2))
    # G: the Gram matrix A Aᵀ, given or once formed
    kind = gram_dtype  # its dtype (_gram_dtype), once known
    history: list[tuple[int, float]] = []  # (step, the larger relative residual of the pairs)
    check = 1  # the next step whose Ritz pairs and residuals are computed
    while steps < max_blocks:
        steps += 1
        c = Q.shape[1]
        P = G @ Q if G is not None else A @ (A.T @ Q)  # one GEMM, or two with the matrix
        V[:, k : k + c] = Q
        PA[:, k : k + c] = P
        cross = V[:, : k + c].T @ P  # the new columns of VᵀAV
        T[: k + c, k : k + c] = cross
        T[k : k + c, :k] = cross[:k].T
        T[k : k + c, k : k + c] = (cross[k:] + cross[k:].T) / 2
        k += c
        Vk = V[:, :k]
        # The next block now (None: an invariant subspace, or the basis is full); the Ritz pairs
        # only at a check step, or when the new block is small against P (near an invariant
        # subspace, where a basis grown further would lose orthogonality).
        Q, near = _next_block(P, Vk, cap - k) if k < cap else (None, True)
        if steps < check and not near and steps < max_blocks:  # far from converged: grow only
            continue
        if k >= 2:
            import scipy.linalg

            theta, Y = scipy.linalg.eigh(T[:k, :k], subset_by_index=[k - 2, k - 1],
                                         check_finite=False)  # fmt: skip
            th, top = theta[::-1], Y[:, ::-1]
        else:
            th, top = np.linalg.eigh(T[:1, :1])[0], np.ones((1, 1))
        R = PA[:, :k] @ top - (Vk @ top) * th
        res = np.linalg.norm(R, axis=0)
        if th[0] <= 0 or np.all(res <= tol * th[0]):
            converged = True
            break
        if k >= cap:
            converged = k >= s  # the basis spans the whole space: exact
            break
        history.append((steps, float(res.max()) / th[0]))
        need = _steps_needed(history, tol, max_blocks - steps)
        # Far from the tolerance, skip the Ritz pairs of the next steps (half the predicted
        # distance, at most MAX_SKIP): the eigenproblem of T grows with the basis and costs
        # more than a step; the cap bounds the steps taken past convergence when the rate
        # misleads.
        check = steps + min(MAX_SKIP, max(1, int(need // 2)))
        if G is None and s >= GRAM_MIN_SIDE:
            saved = need * (1.0 - GRAM_STEP_COST)
            stalled = steps >= EARLY_GRAM_STEP and history[-1][1] > EARLY_GRAM_RESIDUAL
            if stalled or saved > GRAM_STEPS["float32"]:  # which Gram would it be?
                kind = kind or _gram_dtype(A)
                if stalled or saved > GRAM_STEPS[kind]:
                    G = gram(A, kind)
        if Q is None:
            converged = True  # invariant subspace: the Ritz values are exact
            break
    del G
    U = V[:, :k] @ top
    U, _ = np.linalg.qr(U)
    sv = np.linalg.svd(A.T @ U, compute_uv=False)
    out = np.zeros(2)
    out[: min(2, sv.size)] = np.sort(sv)[::-1][:2]
    return out, converged, steps


def _next_block(P: np.ndarray, Vk: np.ndarray, room: int) -> tuple[np.ndarray | None, bool]:
    """The next block: ``P`` orthogonalized against the basis ``Vk`` twice (CGS2), then QR;
    at most ``room`` columns. Returns it (None when nothing new is left: an invariant subspace)
    and whether it is *near* one: a kept column smaller than :data:`NEAR_INVARIANT` of ``P``'s
    largest (the Ritz pairs should be checked before the basis grows further)."""
    Z = P - Vk @ (Vk.T @ P)
    Z -= Vk @ (Vk.T @ Z)
    Qn, Rn = np.linalg.qr(Z)
    scale = max(float(np.linalg.norm(P, axis=0).max()), 1e-300)
    diag = np.abs(np.diag(Rn))
    keep = diag > 1e-12 * scale
    if not keep.any():
        return None, True
    return Qn[:, keep][:, :room], bool(diag[keep].min() < NEAR_INVARIANT * scale)


def _steps_needed(history: list[tuple[int, float]], tol: float, left: int) -> float:
    """The block steps still needed to bring the relative residual to ``tol``, from its rate
    between the last two checks (``history``: ``(step, residual)`` at each check so far); at
    most ``left``; 0 before the third check (no steady rate yet)."""
    if len(history) < 3:
        return 0.0
    (s0, r0), (s1, r1) = history[-2], history[-1]
    if r1 <= 0 or r0 <= 0 or s1 <= s0:
        return 0.0
    rate = (r1 / r0) ** (1.0 / (s1 - s0))
    if rate >= 1:
        return float(left)
    return min(float(left), math.log(tol / r1) / math.log(rate))


#: Entries of one padded batch of :func:`top2_block` (float64: 64 MiB).
BLOCK_BATCH_ENTRIES = 1 << 23


@one_blas_thread()
def top2_block(data, indices, indptr, ptr_off, nnz_off, shapes) -> np.ndarray:
    """σ₁, σ₂ of every matrix of a :class:`~masktopo.analysis._kernels.Block` (CSR pieces as
    :func:`~masktopo.analysis._kernels.pack` lays them out) by dense BLAS: for many small dense
    matrices, such as the IMDB degree groups of a layer at 30–70 % density (a few dozen to a few
    hundred inputs × thousands of outputs), where the compiled engine's Lanczos or its scalar
    Gram matrix visits every entry many times.

    The matrices, sorted by shape, are densified in zero-padded batches (at most
    :data:`BLOCK_BATCH_ENTRIES` entries; zero padding changes no singular value), each oriented
    with its smaller side first; then per batch the Gram matrices ``XXᵀ`` (batched GEMM),
    their top two eigenvectors (LAPACK ``syevd``, batched), and the Rayleigh–Ritz step: σ₁, σ₂
    are the singular values of ``XᵀV``. Exact to about ``ε·σ₁``, as the compiled engine's dense
    route (the same three steps).

    Returns
    -------
    numpy.ndarray
        ``(count, 2)`` float64, descending (zero-padded for rank below 2).
    """
    count = shapes.shape[0]
    out = np.zeros((count, 2))
    m, n = shapes[:, 0], shapes[:, 1]
    small, large = np.minimum(m, n), np.maximum(m, n)
    order = np.lexsort((large, small))
    i = 0
    while i < count:
        s_max, l_max = int(small[order[i]]), int(large[order[i]])
        j = i + 1
        while j < count:  # similar shapes: padding at most ~1.25× the entries
            s2, l2 = int(small[order[j]]), int(large[order[j]])
            s_new, l_new = max(s_max, s2), max(l_max, l2)
            if (j + 1 - i) * s_new * l_new > BLOCK_BATCH_ENTRIES or s_new > s_max * 1.25 + 8:
                break
            s_max, l_max = s_new, l_new
            j += 1
        idx = order[i:j]
        X = np.zeros((j - i, s_max, l_max))
        for b, t in enumerate(idx):
            rows_t, cols_t = int(m[t]), int(n[t])
            ip = indptr[ptr_off[t] : ptr_off[t] + rows_t + 1]
            e = slice(nnz_off[t], nnz_off[t] + int(ip[-1]))
            r = np.repeat(np.arange(rows_t), np.diff(ip))
            if rows_t <= cols_t:
                X[b, r, indices[e]] = data[e]
            else:
                X[b, indices[e], r] = data[e]
        _, V = np.linalg.eigh(X @ X.transpose(0, 2, 1))
        k = min(2, s_max)
        sv = np.linalg.svd(X.transpose(0, 2, 1) @ V[:, :, -k:], compute_uv=False)
        out[idx, :k] = sv
        i = j
    return out
