"""Top singular values of biadjacency matrices, exact in float64, on CPU or CUDA.

The bipartite adjacency ``A = [[0, B], [Bᵀ, 0]]`` has eigenvalues ``±σᵢ(B)`` plus
``|n_out − n_in|`` zeros, because ``A² = diag(BBᵀ, BᵀB)``. So the Perron eigenvalue is
``μ₀ = σ₁(B)`` and the largest non-trivial eigenvalue is ``μ̂ = σ₂(B)``, the *third* largest
``|eig(A)|`` (the second is ``−σ₁``: a known trap, pags-spec §2). Nothing here builds ``A``.

Methods (chosen per matrix by ``method="auto"``; measured costs in docs/performance.md):

``"dense"``
    LAPACK SVD of the whole matrix (the reference; every σ, so only for small matrices).
``"gram"``
    Eigen-decomposition of the smaller-side Gram matrix ``BBᵀ`` or ``BᵀB`` for the top-k
    eigenvectors ``V``, then a Rayleigh–Ritz step: the σ are the singular values of ``BᵀV``
    (or ``BV``). The Ritz step gives every σ to an absolute error of about ``ε·σ₁``, as a direct
    SVD does, where ``sqrt`` of the Gram eigenvalues alone would lose half the digits of small
    σ (e.g. ``μ̂ = 0`` of a complete bipartite graph). Batched on CUDA.
``"sparse"``
    ARPACK Lanczos on the Gram operator of a CSR matrix (``scipy.sparse.linalg.svds``, which
    also finishes with a Ritz step), seeded for determinism. CPU only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch

from ..errors import UnknownNameError

METHODS = ("auto", "dense", "gram", "sparse")

# Thresholds for method="auto" on the CPU (tuned with benchmarks/bench_analysis.py).
_DENSE_MAX_SIDE = 48  # smaller side up to this: full LAPACK SVD is cheapest
_GRAM_MIN_DENSITY = 0.08  # at or above this density, dense Gram + top-k eigh beats Lanczos
_GRAM_MAX_SIDE_ALWAYS = 160  # smaller side up to this: Gram is cheap at any density


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise UnknownNameError("spectral method", method, METHODS)
    return method


def _pad_desc(s: np.ndarray, k: int) -> np.ndarray:
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1][:k]
    if s.size < k:
        s = np.concatenate([s, np.zeros(k - s.size)])
    return s


# --------------------------------------------------------------------------------------------
# CPU, one matrix at a time (numpy / scipy)
# --------------------------------------------------------------------------------------------


def _sv_dense_np(B, k: int) -> np.ndarray:
    if sp.issparse(B):
        B = B.toarray()
    if min(B.shape) == 0:
        return np.zeros(k)
    return _pad_desc(np.linalg.svd(np.asarray(B, dtype=np.float64), compute_uv=False), k)


def _sv_gram_np(B, k: int) -> np.ndarray:
    m, n = B.shape
    s = min(m, n)
    if s == 0:
        return np.zeros(k)
    if s <= k:
        return _sv_dense_np(B, k)
    if sp.issparse(B):
        B = B.tocsr()
        G = (B @ B.T if m <= n else B.T @ B).toarray()
    else:
        B = np.asarray(B, dtype=np.float64)
        G = B @ B.T if m <= n else B.T @ B
    _, V = scipy.linalg.eigh(
        G, subset_by_index=[s - k, s - 1], driver="evr", overwrite_a=True, check_finite=False
    )
    Y = B.T @ V if m <= n else B @ V  # Rayleigh–Ritz: σ(BᵀV) are the Ritz values
    return _pad_desc(np.linalg.svd(np.asarray(Y), compute_uv=False), k)


def _sv_sparse_np(B, k: int) -> np.ndarray:
    m, n = B.shape
    if min(m, n) <= k + 1:
        return _sv_dense_np(B, k)
    A = sp.csr_matrix(B, dtype=np.float64)
    if A.nnz == 0:
        return np.zeros(k)
    v0 = np.random.default_rng(0x5EED).standard_normal(min(m, n))
    try:
        s = sp.linalg.svds(A, k=k, v0=v0, return_singular_vectors=False, solver="arpack")
    except (sp.linalg.ArpackNoConvergence, sp.linalg.ArpackError):  # pragma: no cover - rare
        return _sv_gram_np(A, k)
    return _pad_desc(s, k)


def _auto_cpu(m: int, n: int, nnz: int) -> str:
    s = min(m, n)
    if s <= _DENSE_MAX_SIDE:
        return "dense"
    if s <= _GRAM_MAX_SIDE_ALWAYS or nnz >= _GRAM_MIN_DENSITY * m * n:
        return "gram"
    return "sparse"


_CPU = {"dense": _sv_dense_np, "gram": _sv_gram_np, "sparse": _sv_sparse_np}


def top_singular_values_np(B, k: int = 2, *, method: str = "auto") -> np.ndarray:
    """Top-``k`` singular values of one numpy array or scipy sparse matrix, float64, descending.

    Padded with zeros when the matrix has fewer than ``k`` singular values (they are the extra
    zero eigenvalues of the bipartite adjacency). See the module docstring for the methods.
    """
    _check_method(method)
    m, n = B.shape
    if method == "auto":
        nnz = B.nnz if sp.issparse(B) else int(np.count_nonzero(B))
        method = _auto_cpu(m, n, nnz)
    return _CPU[method](B, k)


# --------------------------------------------------------------------------------------------
# torch, batched (any device; the CUDA path)
# --------------------------------------------------------------------------------------------


def _sv_gram_torch(B: torch.Tensor, k: int) -> torch.Tensor:
    """Batched Gram + eigh + Rayleigh–Ritz in float64. ``B`` is (b, m, n)."""
    m, n = B.shape[1:]
    s = min(m, n)
    B = B.to(torch.float64)
    if s <= k:
        out = torch.linalg.svdvals(B)
        return torch.nn.functional.pad(out, (0, k - s))
    Bt = B.transpose(1, 2)
    G = B @ Bt if m <= n else Bt @ B
    _, V = torch.linalg.eigh(G)
    V = V[..., -k:]
    Y = Bt @ V if m <= n else B @ V
    return torch.linalg.svdvals(Y)  # descending


def top_singular_values(
    B: torch.Tensor | Sequence, k: int = 2, *, method: str = "auto"
) -> torch.Tensor:
    """Top-``k`` singular values of a matrix or a batch of matrices, float64, descending.

    Parameters
    ----------
    B : torch.Tensor or sequence
        ``(m, n)`` or ``(b, m, n)`` tensor of any real dtype (bool and integer masks included), on
        any device; or a sequence of 2-D tensors / numpy arrays / scipy sparse matrices of
        different shapes (then the result is ``(len(B), k)``).
    k : int
        How many singular values (``k = 2`` gives ``μ₀`` and ``μ̂``).
    method : {"auto", "dense", "gram", "sparse"}
        See the module docstring. On CUDA, ``"auto"`` is the batched Gram route.

    Returns
    -------
    torch.Tensor
        float64 of shape ``(k,)``, ``(b, k)`` or ``(len(B), k)``, on ``B``'s device (CPU for a
        sequence), zero-padded where a matrix has fewer than ``k`` singular values.

    Examples
    --------
    >>> top_singular_values(torch.ones(3, 4, dtype=torch.bool))  # K_{3,4}: σ₁ = √12, σ₂ = 0
    tensor([3.4641, 0.0000], dtype=torch.float64)
    """
    _check_method(method)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not isinstance(B, torch.Tensor):
        mats = list(B)
        if not mats:
            return torch.zeros((0, k), dtype=torch.float64)
        return torch.from_numpy(np.stack([_one(M, k, method) for M in mats]))
    if B.ndim not in (2, 3):
        raise ValueError(f"expected a (m, n) or (b, m, n) tensor, got shape {tuple(B.shape)}")
    single = B.ndim == 2
    Bb = B.unsqueeze(0) if single else B
    if Bb.device.type != "cpu" and method in ("auto", "gram"):
        out = _sv_gram_torch(Bb, k)
    elif Bb.device.type != "cpu" and method == "dense":
        out = torch.nn.functional.pad(
            torch.linalg.svdvals(Bb.to(torch.float64)), (0, max(0, k - min(Bb.shape[1:])))
        )[..., :k]
    else:
        arr = Bb.detach().cpu()
        arr = arr.numpy() if arr.dtype != torch.bool else arr.to(torch.float64).numpy()
        res = np.stack([_one(a, k, method) for a in arr])
        out = torch.from_numpy(res).to(Bb.device)
    return out[0] if single else out


def _one(M, k: int, method: str) -> np.ndarray:
    if isinstance(M, torch.Tensor):
        M = M.detach().cpu()
        M = M.to(torch.float64).numpy() if M.dtype == torch.bool else M.numpy()
    if not sp.issparse(M):
        M = np.asarray(M, dtype=np.float64)
    return top_singular_values_np(M, k, method=method)


def solve_many(mats: Sequence, k: int = 2, *, device: str | torch.device = "cpu") -> np.ndarray:
    """Top-``k`` singular values of many scipy sparse matrices of different shapes.

    On the CPU (``k = 2``), each matrix is split into connected components (its σ are the union of
    its components'); components with one row or one column are rank one (``σ₁ = ‖data‖``),
    small ones get the dense Gram route, and all large ones are solved together by one
    block-diagonal Lanczos run (:func:`lanczos_top2`). On CUDA the matrices are densified on the
    device, bucketed by padded shape (zero padding changes no singular value) and solved batched
    with the Gram route. Returns a ``(len(mats), k)`` float64 array, descending.
    """
    device = torch.device(device)
    out = np.zeros((len(mats), k))
    if device.type == "cpu":
        if k != 2:
            for i, M in enumerate(mats):
                out[i] = top_singular_values_np(M, k)
            return out
        return _solve_many_cpu(mats)
    # CUDA: bucket by (rounded-up) shape so that one batched eigh serves many matrices.
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, M in enumerate(mats):
        m, n = M.shape
        if m > n:  # orientation does not change σ; put the smaller side first
            m, n = n, m
        key = (_round_up(m), _round_up(n))
        buckets.setdefault(key, []).append(i)
    for (m, n), idx in buckets.items():
        # Cap the batch so the dense batch stays within ~1 GiB of float64.
        per = max(1, int((1 << 27) // max(1, m * n)))
        for start in range(0, len(idx), per):
            chunk = idx[start : start + per]
            batch = torch.zeros((len(chunk), m, n), dtype=torch.float64, device=device)
            for j, i in enumerate(chunk):
                M = sp.coo_matrix(mats[i])
                r, c = (M.row, M.col) if M.shape[0] <= M.shape[1] else (M.col, M.row)
                batch[j, torch.from_numpy(r).to(device), torch.from_numpy(c).to(device)] = (
                    torch.from_numpy(M.data.astype(np.float64)).to(device)
                )
            out[chunk] = _sv_gram_torch(batch, k).cpu().numpy()
    return out


# Matrices whose smaller side is at most this go to dense routes; larger ones to Lanczos.
_LANCZOS_MIN_SIDE = 96


def _solve_many_cpu(mats: Sequence) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    cand: list[list[float]] = [[] for _ in mats]  # candidate σ per matrix (from components)
    big: list[sp.csr_matrix] = []
    big_owner: list[int] = []
    small: list[sp.csr_matrix] = []
    small_owner: list[int] = []

    def route(i, S):
        if min(S.shape) <= _LANCZOS_MIN_SIDE:
            small.append(S)
            small_owner.append(i)
        else:
            big.append(S if S.shape[0] <= S.shape[1] else S.T.tocsr())
            big_owner.append(i)

    for i, M in enumerate(mats):
        M = sp.csr_matrix(M, dtype=np.float64)
        m, n = M.shape
        if M.nnz == 0 or min(m, n) == 0:
            continue
        if min(m, n) <= _LANCZOS_MIN_SIDE:
            route(i, M)  # dense routes are exact whatever the connectivity
            continue
        coo = M.tocoo()
        N = m + n
        adj = sp.csr_matrix((np.ones(coo.nnz), (coo.row, coo.col + m)), shape=(N, N))
        n_comp, lab = connected_components(adj, directed=True, connection="weak")
        if n_comp == 1:
            route(i, M)
            continue
        # Split: σ(M) is the union of its components' σ.
        elab = lab[coo.row]
        rows_per = np.bincount(lab[:m], minlength=n_comp)
        cols_per = np.bincount(lab[m:], minlength=n_comp)
        sq = np.bincount(elab, weights=coo.data**2, minlength=n_comp)
        rank1 = (np.minimum(rows_per, cols_per) == 1) & (sq > 0)
        cand[i].extend(np.sqrt(sq[rank1]).tolist())
        for c in np.flatnonzero(~rank1 & (np.minimum(rows_per, cols_per) >= 2)):
            route(i, M[np.flatnonzero(lab[:m] == c)][:, np.flatnonzero(lab[m:] == c)])
    if small:
        for owner, sv in zip(small_owner, gram_top2_batch(small), strict=True):
            cand[owner].extend(sv)
    if big:
        for owner, sv in zip(big_owner, lanczos_top2(big), strict=True):
            cand[owner].extend(sv)
    out = np.zeros((len(mats), 2))
    for i, c in enumerate(cand):
        out[i] = _pad_desc(np.asarray(c, dtype=np.float64), 2)
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


def gram_top2_batch(mats: Sequence[sp.csr_matrix]) -> np.ndarray:
    """σ₁, σ₂ of many matrices with a small side, by batched Gram eigh + Rayleigh–Ritz.

    Each matrix is oriented so its smaller side ``s`` is the column side; its Gram ``AᵀA``
    (``s × s``) is zero-padded to a common size per bucket (padding adds only zero eigenvalues)
    and all buckets go through one batched ``eigh`` each. The σ are the singular values of
    ``A·V`` for the top-2 eigenvectors ``V`` (exact Ritz step, as in :func:`lanczos_top2`).
    """
    nb = len(mats)
    if nb == 0:
        return np.zeros((0, 2))
    oriented = [A.tocsr() if A.shape[1] <= A.shape[0] else A.T.tocsr() for A in mats]
    V_all: list[np.ndarray] = [None] * nb  # type: ignore[list-item]
    buckets: dict[int, list[int]] = {}
    for i, A in enumerate(oriented):
        buckets.setdefault(_bucket_side(A.shape[1]), []).append(i)
    for side, idx in buckets.items():
        if side > 32:  # per matrix, LAPACK's evx for the top two eigenpairs only
            for i in idx:
                A = oriented[i]
                s = A.shape[1]
                _, V = scipy.linalg.eigh(
                    (A.T @ A).toarray(), subset_by_index=[s - 2, s - 1], driver="evx",
                    check_finite=False, overwrite_a=True,
                )  # fmt: skip
                V_all[i] = V[:, ::-1]
            continue
        G = np.zeros((len(idx), side, side))
        for j, i in enumerate(idx):
            A = oriented[i]
            s = A.shape[1]
            G[j, :s, :s] = (A.T @ A).toarray()
        _, V = np.linalg.eigh(G)  # batched: cheapest for tiny matrices
        for j, i in enumerate(idx):
            V_all[i] = V[j, : oriented[i].shape[1], -1:-3:-1]
    B, ro, _ = _blockdiag(oriented)
    Y = B @ np.concatenate(V_all)
    m = np.diff(ro)
    return _qr2_svd(Y, ro[:-1], np.repeat(np.arange(nb), m))


def _bucket_side(s: int) -> int:
    return max(2, 8 * -(-s // 8)) if s <= 32 else s


def _blockdiag(mats: Sequence[sp.csr_matrix]):
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
    mats: Sequence[sp.csr_matrix],
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
    B, ro, _ = _blockdiag(mats)
    Bt = B.T.tocsr()
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
        if keep.size < len(gids) and m_loc[keep].sum() < 0.7 * M_tot:
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
    B, ro, co = _blockdiag(mats)
    Y = B.T.tocsr() @ np.concatenate(U_all)
    out = _qr2_svd(Y, co[:-1], np.repeat(np.arange(nb), np.diff(co)))
    for j in np.flatnonzero(unconverged):  # pragma: no cover - not seen on real masks
        out[j] = _sv_sparse_np(mats[j], 2)
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


def _round_up(x: int) -> int:
    """Round a side length up so that similar shapes share a bucket (powers of 2, in quarters)."""
    if x <= 32:
        return 32
    p = 1 << (x - 1).bit_length()
    for q in (p // 2 + p // 8, p // 2 + p // 4, p // 2 + 3 * p // 8):
        if q >= x:
            return q
    return p
