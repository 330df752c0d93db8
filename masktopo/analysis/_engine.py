"""The CPU engine behind :func:`masktopo.analysis.spectral.solve_many` (numpy and scipy only).

Kept free of torch so that a worker process can import it cheaply. Matrices travel as light
:class:`Parts` (CSR arrays plus shape) to avoid scipy's per-object overhead, which dominates when a
network yields hundreds of small IMDB subgraphs.

Exactness: every σ comes from an exact method (dense eigen-decomposition with a Rayleigh–Ritz step,
or Lanczos with full reorthogonalization stopped on a residual bound and finished with a
Rayleigh–Ritz step). Disconnected matrices are split into connected components first, because a
single-vector Krylov method cannot see a repeated top singular value; a connected non-negative
matrix has a simple σ₁ (Perron–Frobenius).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

# Matrices whose smaller side is at most this are solved densely; larger ones by Lanczos.
LANCZOS_MIN_SIDE = 96


class Parts(NamedTuple):
    """A CSR matrix as plain arrays: float64 ``data``, int32 ``indices`` and ``indptr``."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @classmethod
    def of(cls, M) -> Parts:
        """From a :class:`Parts`, a scipy sparse matrix or a dense array."""
        if isinstance(M, Parts):
            return M
        M = sp.csr_matrix(M, dtype=np.float64)
        M.sum_duplicates()
        return cls(M.data, M.indices.astype(np.int32), M.indptr.astype(np.int32), M.shape)

    def scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    def dense(self) -> np.ndarray:
        X = np.zeros(self.shape)
        X[self.rows(), self.indices] = self.data
        return X

    def transpose(self) -> Parts:
        T = self.scipy().T.tocsr()
        return Parts(T.data, T.indices.astype(np.int32), T.indptr.astype(np.int32), T.shape)


def pad_desc(values, k: int = 2) -> np.ndarray:
    """The ``k`` largest values, float64 descending, zero-padded to length ``k``."""
    s = np.sort(np.asarray(values, dtype=np.float64))[::-1][:k]
    return np.concatenate([s, np.zeros(k - s.size)]) if s.size < k else s


def arpack_top(A, k: int = 2) -> np.ndarray:
    """Top-``k`` σ of a sparse matrix by ARPACK (``svds``), with a seeded start vector."""
    v0 = np.random.default_rng(0x5EED).standard_normal(min(A.shape))
    s = sp.linalg.svds(A, k=k, v0=v0, return_singular_vectors=False, solver="arpack")
    return pad_desc(s, k)


def solve_top2(mats: Sequence, connected: Sequence[bool] | None = None) -> np.ndarray:
    """σ₁, σ₂ of every matrix in ``mats`` (Parts, scipy sparse or dense); ``(len, 2)`` float64.

    ``connected[i] = True`` promises that matrix ``i``'s bipartite graph is connected (skips the
    component search). Small matrices go to :func:`dense_top2`; large connected ones are solved
    together by :func:`lanczos_top2`; components with one row or column are rank one
    (``σ₁ = ‖data‖``).
    """
    cand: list[list[float]] = [[] for _ in mats]
    big: list[Parts] = []
    big_owner: list[int] = []
    small: list[Parts] = []
    small_owner: list[int] = []

    def route(i: int, P: Parts) -> None:
        m, n = P.shape
        if min(m, n) <= LANCZOS_MIN_SIDE:
            small.append(P)
            small_owner.append(i)
        else:
            big.append(P if m <= n else P.transpose())
            big_owner.append(i)

    for i, M in enumerate(mats):
        P = Parts.of(M)
        m, n = P.shape
        if P.nnz == 0 or min(m, n) == 0:
            continue
        if min(m, n) <= LANCZOS_MIN_SIDE or (connected is not None and connected[i]):
            route(i, P)  # dense routes are exact whatever the connectivity
            continue
        rows = P.rows()
        adj = sp.csr_matrix((np.ones(P.nnz), (rows, P.indices + m)), shape=(m + n, m + n))
        n_comp, lab = connected_components(adj, directed=True, connection="weak")
        if n_comp == 1:
            route(i, P)
            continue
        rows_per = np.bincount(lab[:m], minlength=n_comp)
        cols_per = np.bincount(lab[m:], minlength=n_comp)
        sq = np.bincount(lab[rows], weights=P.data**2, minlength=n_comp)
        rank1 = (np.minimum(rows_per, cols_per) == 1) & (sq > 0)
        cand[i].extend(np.sqrt(sq[rank1]).tolist())
        S = P.scipy()
        for c in np.flatnonzero(~rank1 & (np.minimum(rows_per, cols_per) >= 2)):
            sub = S[np.flatnonzero(lab[:m] == c)][:, np.flatnonzero(lab[m:] == c)]
            route(i, Parts.of(sub))
    for owner, sv in zip(small_owner, dense_top2(small), strict=True):
        cand[owner].extend(sv)
    if big:
        for owner, sv in zip(big_owner, lanczos_top2(big), strict=True):
            cand[owner].extend(sv)
    return np.stack([pad_desc(c) for c in cand]) if cand else np.zeros((0, 2))


def dense_top2(mats: Sequence[Parts]) -> np.ndarray:
    """σ₁, σ₂ of matrices with a small side, densely: Gram eigenvectors + Rayleigh–Ritz.

    The smaller-side Gram matrix ``G`` (``s × s``) is formed by BLAS from the dense matrix; its top
    two eigenvectors ``V`` come from a batched ``eigh`` (``s ≤ 32``, zero-padded per bucket: padding
    adds only zero eigenvalues) or LAPACK's ``evx`` (larger ``s``); the σ are the singular values
    of ``XᵀV``, which keeps small σ accurate to ``ε·σ₁`` (``sqrt`` of Gram eigenvalues would not).
    """
    out = np.zeros((len(mats), 2))
    dense: list[np.ndarray] = []
    grams: list[np.ndarray] = []
    for P in mats:
        X = P.dense()
        if X.shape[0] > X.shape[1]:
            X = X.T  # rows = smaller side
        dense.append(X)
        grams.append(X @ X.T)
    V_all: list[np.ndarray | None] = [None] * len(mats)
    buckets: dict[int, list[int]] = {}
    for i, G in enumerate(grams):
        s = G.shape[0]
        if s <= 2:
            V_all[i] = np.eye(s)[:, ::-1]
        elif s > 32:
            _, V = scipy.linalg.eigh(G, subset_by_index=[s - 2, s - 1], driver="evx",
                                     check_finite=False)  # fmt: skip
            if V.shape[1] != 2:  # pragma: no cover - evx's bisection came short: full eigh
                V = np.linalg.eigh(G)[1][:, -2:]
            V_all[i] = V[:, ::-1]
        else:
            buckets.setdefault(8 * -(-s // 8), []).append(i)
    for side, idx in buckets.items():
        G = np.zeros((len(idx), side, side))
        for j, i in enumerate(idx):
            s = grams[i].shape[0]
            G[j, :s, :s] = grams[i]
        _, V = np.linalg.eigh(G)
        for j, i in enumerate(idx):
            V_all[i] = V[j, : grams[i].shape[0], -1:-3:-1]
    for i, X in enumerate(dense):
        out[i] = pad_desc(np.linalg.svd(X.T @ V_all[i], compute_uv=False))
    return out


def _qr2_svd(Y: np.ndarray, seg_starts: np.ndarray, seg_id: np.ndarray) -> np.ndarray:
    """Singular values of many two-column blocks stacked in ``Y`` (rows grouped by segment).

    Two-column classical Gram–Schmidt with one re-orthogonalization (``R`` accurate to ``ε·‖Y‖``),
    then the SVD of each 2×2 ``R``.
    """
    nb = seg_starts.size
    y1, y2 = Y[:, 0].copy(), Y[:, 1].copy()
    r11 = np.sqrt(np.add.reduceat(y1 * y1, seg_starts))
    q1 = y1 / np.where(r11 > 0, r11, 1.0)[seg_id]
    r12 = np.zeros(nb)
    for _ in range(2):
        c = np.add.reduceat(q1 * y2, seg_starts)
        y2 -= c[seg_id] * q1
        r12 += c
    r22 = np.sqrt(np.add.reduceat(y2 * y2, seg_starts))
    R = np.zeros((nb, 2, 2))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 1] = r11, r12, r22
    return np.linalg.svd(R, compute_uv=False)


def _blockdiag(mats: Sequence[Parts]):
    """One CSR matrix with ``mats`` on its diagonal, plus row and column offsets."""
    m = np.array([A.shape[0] for A in mats], dtype=np.int64)
    n = np.array([A.shape[1] for A in mats], dtype=np.int64)
    ro = np.concatenate([[0], np.cumsum(m)])
    co = np.concatenate([[0], np.cumsum(n)])
    eo = np.concatenate([[0], np.cumsum([A.nnz for A in mats])])
    indptr = np.concatenate([[0]] + [A.indptr[1:] + eo[j] for j, A in enumerate(mats)])
    indices = np.concatenate([A.indices + co[j] for j, A in enumerate(mats)])
    data = np.concatenate([A.data for A in mats]).astype(np.float64, copy=False)
    B = sp.csr_matrix(
        (data, indices.astype(np.int32), indptr.astype(np.int32)), shape=(int(ro[-1]), int(co[-1]))
    )
    return B, ro, co


def lanczos_top2(
    mats: Sequence[Parts],
    *,
    tol: float = 1e-10,
    max_steps: int = 600,
    seed: int = 0x5EED,
) -> np.ndarray:
    """σ₁, σ₂ of many connected sparse matrices by one block-diagonal Lanczos run.

    The matrices (each with rows ≤ columns) are placed on the diagonal of one CSR matrix ``B``;
    every Lanczos step applies the Gram operator ``BBᵀ`` of all of them with two sparse
    matrix-vector products, and dot products are segment sums over each block's rows. Each block
    is reorthogonalized in full (classical Gram–Schmidt, repeated by the DGKS criterion) and stops
    when the residual bound ``β_k·|s_{k,i}|`` of its two top Ritz pairs is at most ``tol·θ₁`` (or
    when its Krylov space is exhausted). Finished blocks are dropped from the problem, so the last
    slow blocks do not pay for the others. A final Rayleigh–Ritz step takes the σ as the singular
    values of ``BᵀU`` for the Ritz vectors ``U``, so small σ keep full absolute accuracy.

    A connected graph has a simple top singular value (Perron–Frobenius), so single-vector
    Lanczos cannot miss a repeated σ₁; callers split disconnected matrices first. Blocks that do
    not converge within ``max_steps`` fall back to ARPACK. The start vectors come from a seeded
    generator, so results are deterministic.

    Returns
    -------
    numpy.ndarray
        ``(len(mats), 2)`` float64, descending.
    """
    nb = len(mats)
    if nb == 0:
        return np.zeros((0, 2))
    rng = np.random.default_rng(seed)
    starts_all = [rng.standard_normal(A.shape[0]) for A in mats]
    U_all = [np.zeros((A.shape[0], 2)) for A in mats]
    unconverged = np.ones(nb, dtype=bool)

    gids = np.arange(nb)  # global ids of the blocks in the current (compacted) problem
    B, ro, co_all = _blockdiag(mats)
    Bt = B.T.tocsr()
    Bt_all = Bt  # kept for the final Rayleigh–Ritz step
    nnz_blk = np.array([A.nnz for A in mats], dtype=np.int64)
    M_tot = B.shape[0]
    m_loc = np.diff(ro)
    bid = np.repeat(np.arange(nb), m_loc)
    q = np.concatenate(starts_all)
    q /= np.sqrt(np.add.reduceat(q * q, ro[:-1]))[bid]
    # Lanczos vectors stored row-major, one row per coordinate: block j's basis is the strided
    # view QT[r0:r1, :k], so its reorthogonalization is two BLAS matrix-vector products.
    QT = np.zeros((M_tot, 64))
    QT[:, 0] = q
    alpha = np.zeros((max_steps, nb))
    beta = np.zeros((max_steps, nb))
    active = np.ones(nb, dtype=bool)
    alive = np.ones(M_tot)
    next_check = np.full(nb, 8)
    for k in range(max_steps):
        starts = ro[:-1]
        qk = QT[:, k]
        z = B @ (Bt @ qk)
        z *= alive  # finished blocks stay at zero
        a = np.add.reduceat(qk * z, starts)
        alpha[k] = a
        z -= a[bid] * qk
        if k:
            z -= beta[k - 1][bid] * QT[:, k - 1]
        # Full reorthogonalization of every running block: classical Gram–Schmidt, repeated
        # when the norm dropped by more than 1/√2 (DGKS), keeping Q orthonormal to working
        # precision.
        b = np.zeros(len(gids))
        for j in np.flatnonzero(active):
            r0, r1 = ro[j], ro[j + 1]
            Qj = QT[r0:r1, : k + 1]
            zj = z[r0:r1]
            n0 = zj @ zj
            for _ in range(2):
                zj -= Qj @ (zj @ Qj)
                n1 = zj @ zj
                if n1 >= 0.5 * n0:
                    break
                n0 = n1
            b[j] = np.sqrt(n1)
        beta[k] = b
        scale = np.abs(alpha[: k + 1]).max(axis=0)
        broke = active & (b <= 1e-13 * np.maximum(scale, 1e-300))
        last = k + 1 == max_steps
        due = active & ((next_check <= k + 1) | broke | last | (k + 1 >= m_loc))
        if due.any():
            for j in np.flatnonzero(due):
                Sj, ratio = _ritz_if_done(k + 1, alpha[:, j], beta[:, j], tol,
                                          bool(broke[j]) or last, int(m_loc[j]))  # fmt: skip
                if Sj is None:
                    # Residuals fall roughly geometrically: look again sooner when close.
                    next_check[j] = k + 1 + (3 if ratio < 1e3 else 6 if ratio < 1e7 else 10)
                    continue
                r0, r1 = ro[j], ro[j + 1]
                U_all[gids[j]] = QT[r0:r1, : k + 1] @ Sj
                unconverged[gids[j]] = last and not broke[j] and k + 1 < m_loc[j]
                active[j] = False
                alive[r0:r1] = 0.0
                z[r0:r1] = 0.0
        if not active.any():
            break
        if QT.shape[1] <= k + 1:
            QT = np.concatenate([QT, np.zeros_like(QT)], axis=1)
        QT[:, k + 1] = z / np.where(b > 0, b, 1.0)[bid]
        keep = np.flatnonzero(active)
        # Compact once half of the work (nonzeros) has finished: rebuilding costs about ten
        # matrix-vector products, so this bounds the total rebuild cost by about one build.
        if keep.size < len(gids) and nnz_blk[gids[keep]].sum() < 0.5 * nnz_blk[gids].sum():
            # Compact: rebuild the problem from the blocks still running.
            rows = np.concatenate([np.arange(ro[j], ro[j + 1]) for j in keep])
            gids = gids[keep]
            B, ro, _ = _blockdiag([mats[g] for g in gids])
            Bt = B.T.tocsr()
            M_tot = B.shape[0]
            m_loc = np.diff(ro)
            bid = np.repeat(np.arange(len(gids)), m_loc)
            QT = QT[rows]
            alpha, beta = alpha[:, keep], beta[:, keep]
            next_check = next_check[keep]
            active = np.ones(len(gids), dtype=bool)
            alive = np.ones(M_tot)

    # Rayleigh–Ritz over all blocks: σ(BᵀU) per block (two-column QR, then 2×2 SVD).
    Y = Bt_all @ np.concatenate(U_all)
    out = _qr2_svd(Y, co_all[:-1], np.repeat(np.arange(nb), np.diff(co_all)))
    for j in np.flatnonzero(unconverged):  # pragma: no cover - not seen on real masks
        out[j] = arpack_top(mats[j].scipy())
    return out


def _ritz_if_done(K, alpha, beta, tol, force, m):
    """Top-2 Ritz coefficient vectors ``(K, 2)`` (descending) once a block has converged.

    Uses LAPACK's MRRR (``stemr``) on the block's tridiagonal matrix for its top two eigenpairs
    only, ``O(K²)``. Returns ``(S, ratio)``: ``S`` is None while the residual bound is above
    ``tol·θ₁``, and ``ratio`` is how far above it is.
    """
    if K == 1:
        return (np.array([[1.0, 0.0]]) if force or m <= 1 else None), np.inf
    theta, S = scipy.linalg.eigh_tridiagonal(
        alpha[:K], beta[: K - 1], select="i", select_range=(K - 2, K - 1), check_finite=False
    )
    ratio = float(np.max(beta[K - 1] * np.abs(S[-1, :])) / (tol * max(theta[-1], 1e-300)))
    if force or K >= m or ratio <= 1.0:
        return S[:, ::-1], ratio
    return None, ratio
