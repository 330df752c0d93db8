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
    for i, M in enumerate(mats):
        M = sp.csr_matrix(M, dtype=np.float64)
        m, n = M.shape
        if M.nnz == 0 or min(m, n) == 0:
            continue
        if min(m, n) <= _LANCZOS_MIN_SIDE:
            cand[i].extend(_auto_small(M))
            continue
        coo = M.tocoo()
        N = m + n
        adj = sp.csr_matrix((np.ones(coo.nnz), (coo.row, coo.col + m)), shape=(N, N))
        n_comp, lab = connected_components(adj, directed=True, connection="weak")
        if n_comp == 1:
            big.append(M if m <= n else M.T.tocsr())
            big_owner.append(i)
            continue
        # Split: σ(M) is the union of its components' σ.
        elab = lab[coo.row]
        rows_per = np.bincount(lab[:m], minlength=n_comp)
        cols_per = np.bincount(lab[m:], minlength=n_comp)
        sq = np.bincount(elab, weights=coo.data**2, minlength=n_comp)
        rank1 = (np.minimum(rows_per, cols_per) == 1) & (sq > 0)
        cand[i].extend(np.sqrt(sq[rank1]).tolist())
        for c in np.flatnonzero(~rank1 & (np.minimum(rows_per, cols_per) >= 2)):
            r_idx = np.flatnonzero(lab[:m] == c)
            c_idx = np.flatnonzero(lab[m:] == c)
            S = M[r_idx][:, c_idx]
            if min(S.shape) <= _LANCZOS_MIN_SIDE:
                cand[i].extend(_auto_small(S))
            else:
                big.append(S if S.shape[0] <= S.shape[1] else S.T.tocsr())
                big_owner.append(i)
    if big:
        res = lanczos_top2(big)
        for owner, (s1, s2) in zip(big_owner, res, strict=True):
            cand[owner].extend((s1, s2))
    out = np.zeros((len(mats), 2))
    for i, c in enumerate(cand):
        out[i] = _pad_desc(np.asarray(c, dtype=np.float64), 2)
    return out


def _auto_small(M) -> list[float]:
    m, n = M.shape
    method = _auto_cpu(m, n, M.nnz)
    if method == "sparse":
        method = "gram"
    return _CPU[method](M, 2).tolist()


def lanczos_top2(
    mats: Sequence[sp.csr_matrix],
    *,
    tol: float = 1e-12,
    max_steps: int = 600,
    seed: int = 0x5EED,
) -> np.ndarray:
    """σ₁, σ₂ of many connected sparse matrices by one block-diagonal Lanczos run.

    The matrices (each with rows ≤ columns) are placed on the diagonal of one CSR matrix ``B``;
    every Lanczos step applies the Gram operator ``BBᵀ`` of all of them with two sparse
    matrix-vector products, and dot products are segment sums over each block's rows. Each block
    is reorthogonalized in full (two classical Gram–Schmidt passes) and stops when the residual
    bound ``β_k·|s_{k,i}|`` of its two top Ritz pairs is at most ``tol·θ₁`` (or on breakdown, when
    its Krylov space is exhausted). A final Rayleigh–Ritz step takes the σ as the singular values
    of ``BᵀU`` for the Ritz vectors ``U``, so small σ keep full absolute accuracy.

    A connected graph has a simple top singular value (Perron–Frobenius), so single-vector
    Lanczos cannot miss a repeated σ₁; callers split disconnected matrices first.
    Blocks that do not converge within ``max_steps`` fall back to ARPACK.

    Returns
    -------
    numpy.ndarray
        ``(len(mats), 2)`` float64, descending.
    """
    nb = len(mats)
    if nb == 0:
        return np.zeros((0, 2))
    m = np.array([A.shape[0] for A in mats], dtype=np.int64)
    n = np.array([A.shape[1] for A in mats], dtype=np.int64)
    ro = np.concatenate([[0], np.cumsum(m)])
    co = np.concatenate([[0], np.cumsum(n)])
    nnz = np.array([A.nnz for A in mats], dtype=np.int64)
    eo = np.concatenate([[0], np.cumsum(nnz)])
    indptr = np.concatenate([[0]] + [A.indptr[1:] + eo[j] for j, A in enumerate(mats)])
    indices = np.concatenate([A.indices + co[j] for j, A in enumerate(mats)])
    data = np.concatenate([A.data for A in mats]).astype(np.float64)
    M_tot, N_tot = int(ro[-1]), int(co[-1])
    B = sp.csr_matrix(
        (data, indices.astype(np.int32), indptr.astype(np.int32)), shape=(M_tot, N_tot)
    )
    Bt = B.T.tocsr()
    starts = ro[:-1]
    bid = np.repeat(np.arange(nb), m)

    def seg(x):
        return np.add.reduceat(x, starts)

    rng = np.random.default_rng(seed)
    q = rng.standard_normal(M_tot)
    q /= np.sqrt(seg(q * q))[bid]
    cap = 64
    Q = np.empty((cap, M_tot))
    Q[0] = q
    alpha = np.zeros((max_steps, nb))
    beta = np.zeros((max_steps, nb))
    active = np.ones(nb, dtype=bool)
    alive = np.ones(M_tot)  # 0 on the rows of finished blocks
    U = np.zeros((M_tot, 2))
    next_check = 8
    for k in range(max_steps):
        z = B @ (Bt @ Q[k])
        a = seg(Q[k] * z)
        alpha[k] = a
        z -= a[bid] * Q[k]
        if k:
            z -= beta[k - 1][bid] * Q[k - 1]
        # Full reorthogonalization: classical Gram–Schmidt, repeated where the norm dropped by
        # more than 1/√2 (the DGKS criterion), which keeps Q orthonormal to working precision.
        z *= alive
        nz0 = seg(z * z)
        for _ in range(2):
            C = np.add.reduceat(Q[: k + 1] * z, starts, axis=1)
            z -= np.einsum("kr,kr->r", C[:, bid], Q[: k + 1])
            nz1 = seg(z * z)
            if not np.any(nz1 < 0.5 * nz0):
                break
            nz0 = nz1
        b = np.sqrt(nz1)
        beta[k] = b
        scale = np.abs(alpha[: k + 1]).max(axis=0)
        broke = active & (b <= 1e-13 * np.maximum(scale, 1e-300))
        if k + 1 >= next_check or broke.any() or k + 1 == max_steps:
            _check_blocks(k + 1, alpha, beta, active, broke, tol, Q, ro, U, alive, m,
                          force=(k + 1 == max_steps))  # fmt: skip
            if k + 1 >= next_check:
                next_check = k + 1 + max(4, (k + 1) // 4)
        if not active.any():
            break
        b_safe = np.where(b > 0, b, 1.0)
        if k + 1 >= cap:
            cap *= 2
            Q2 = np.empty((cap, M_tot))
            Q2[: k + 1] = Q[: k + 1]
            Q = Q2
        Q[k + 1] = z / b_safe[bid] * alive
    out = np.zeros((nb, 2))
    # Rayleigh–Ritz: σ(BᵀU) per block, by a two-column Gram–Schmidt QR then a 2×2 SVD.
    Y = Bt @ U
    cst = co[:-1]

    def cseg(x):
        return np.add.reduceat(x, cst)

    cb = np.repeat(np.arange(nb), n)
    y1, y2 = Y[:, 0].copy(), Y[:, 1].copy()
    r11 = np.sqrt(cseg(y1 * y1))
    q1 = y1 / np.where(r11 > 0, r11, 1.0)[cb]
    r12 = np.zeros(nb)
    for _ in range(2):
        c = cseg(q1 * y2)
        y2 -= c[cb] * q1
        r12 += c
    r22 = np.sqrt(cseg(y2 * y2))
    R = np.zeros((nb, 2, 2))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 1] = r11, r12, r22
    out[:] = np.linalg.svd(R, compute_uv=False)
    fallback = np.flatnonzero(active)  # did not converge: ARPACK, one by one
    for j in fallback:  # pragma: no cover - not seen on real masks
        out[j] = _sv_sparse_np(mats[j], 2)
    return out


def _check_blocks(K, alpha, beta, active, broke, tol, Q, ro, U, alive, m, force=False):
    """Test the active blocks for convergence at Krylov dimension ``K``; store Ritz vectors.

    Uses LAPACK's MRRR (``stemr``) on each block's tridiagonal matrix for its top two eigenpairs
    only, ``O(K²)`` per block.
    """
    for j in np.flatnonzero(active):
        d = alpha[:K, j]
        e = beta[: K - 1, j]
        if K == 1:
            theta, S = d.copy(), np.ones((1, 1))
        else:
            theta, S = scipy.linalg.eigh_tridiagonal(
                d, e, select="i", select_range=(max(K - 2, 0), K - 1), check_finite=False
            )
        top = theta[-1]
        res = beta[K - 1, j] * np.abs(S[-1, :])
        if not (force or broke[j] or K >= m[j] or np.all(res <= tol * max(top, 1e-300))):
            continue
        r0, r1 = ro[j], ro[j + 1]
        Sj = S[:, ::-1] if S.shape[1] == 2 else np.concatenate([S, np.zeros((K, 1))], axis=1)
        U[r0:r1] = Q[:K, r0:r1].T @ Sj
        alive[r0:r1] = 0.0
        active[j] = False


def _round_up(x: int) -> int:
    """Round a side length up so that similar shapes share a bucket (powers of 2, in quarters)."""
    if x <= 32:
        return 32
    p = 1 << (x - 1).bit_length()
    for q in (p // 2 + p // 8, p // 2 + p // 4, p // 2 + 3 * p // 8):
        if q >= x:
            return q
    return p
