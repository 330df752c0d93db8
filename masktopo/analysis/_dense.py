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

import numpy as np
import scipy.linalg

#: Vectors per block: GEMM reaches most of its speed at 16 (docs/performance.md).
BLOCK = 16
#: Block steps before giving up (the caller then uses the compiled engine).
MAX_BLOCKS = 80
#: Seed of the start block (results are deterministic).
SEED = 0x5EED


def top2_dense(D: np.ndarray, tol: float, *, block: int = BLOCK,
               max_blocks: int = MAX_BLOCKS) -> tuple[np.ndarray, bool, int]:  # fmt: skip
    """σ₁, σ₂ of a dense float64 matrix by block Krylov (module docstring).

    Parameters
    ----------
    D : numpy.ndarray
        ``m × n`` float64 (C or Fortran order; not copied).
    tol : float
        Residual tolerance relative to σ₁² (:data:`masktopo.analysis._engine.TOL`).
    block, max_blocks : int
        Block size and the most block steps.

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
    while steps < max_blocks:
        steps += 1
        c = Q.shape[1]
        P = A @ (A.T @ Q)  # two GEMMs with the matrix
        V[:, k : k + c] = Q
        PA[:, k : k + c] = P
        cross = V[:, : k + c].T @ P  # the new columns of VᵀAV
        T[: k + c, k : k + c] = cross
        T[k : k + c, :k] = cross[:k].T
        T[k : k + c, k : k + c] = (cross[k:] + cross[k:].T) / 2
        k += c
        Vk = V[:, :k]
        if k >= 2:
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
        # next block: P orthogonalized against the basis twice (CGS2), then QR
        Z = P - Vk @ (Vk.T @ P)
        Z -= Vk @ (Vk.T @ Z)
        Qn, Rn = np.linalg.qr(Z)
        scale = max(float(np.linalg.norm(P, axis=0).max()), 1e-300)
        keep = np.abs(np.diag(Rn)) > 1e-12 * scale
        if not keep.any():
            converged = True  # invariant subspace: the Ritz values are exact
            break
        Q = Qn[:, keep][:, : cap - k]
    U = V[:, :k] @ top
    U, _ = np.linalg.qr(U)
    sv = np.linalg.svd(A.T @ U, compute_uv=False)
    out = np.zeros(2)
    out[: min(2, sv.size)] = np.sort(sv)[::-1][:2]
    return out, converged, steps
