r"""The device route's σ of large matrices: batched block Krylov on the Gram matrices (torch).

:func:`masktopo.analysis.spectral.solve_many` sends large matrices to an accelerator as dense,
zero-padded batches (``dense_batches``). A full ``torch.linalg.eigh`` of each Gram matrix costs
``O(s³)`` and cuSOLVER runs it one matrix after another above side 32: on an H200 it took ~28 ms a
call at PAGS sizes and 3.5 s of a Llama-2-7B block (docs/performance.md, "GPU suite"). Only σ₁
and σ₂ are needed, so here every matrix of a batch runs the block Krylov iteration of
:mod:`masktopo.analysis._dense` (the CPU engine's dense route) at once, with batched products
(``bmm``), and leaves the batch as soon as its residual test is met.

Method, for a batch ``B`` of ``b`` matrices ``s × l`` (``s ≤ l``), ``A = BBᵀ`` formed once in
float64 (one batched GEMM, compute-bound):

1. ``Q₀``: an orthonormal basis of a seeded Gaussian ``s × p`` block (:data:`SEED`, drawn on the
   CPU: the same start on every device), ``p =`` :data:`BLOCK`;
2. step ``j``: ``P_j = A Q_j``; the Rayleigh quotient ``T = VᵀAV`` of the basis
   ``V = [Q₀ … Q_j]`` extended by ``Vᵀ P_j``; when due, the top ``k`` eigenpairs ``(θᵢ, yᵢ)``
   of ``T`` and the explicit residuals ``‖A V yᵢ − θᵢ V yᵢ‖``;
3. a matrix is done when every residual is at most ``tol·θ₁`` (``TOL·σ₁²``, the compiled
   engine's test), when its basis spans the whole space (``j·p ≥ s``: exact), or when ``θ₁ = 0``;
4. the next block: ``P_j`` orthogonalized against ``V`` twice (CGS2), then orthonormalized by
   Cholesky QR twice (batched small factorizations). A block too ill-conditioned for that, as
   when the Krylov space of a matrix stops growing (a rank below the basis, an invariant
   subspace), takes Householder QR instead, which fills the vanished columns with arbitrary
   directions, then one more projection against ``V`` and QR, which make them orthogonal to
   ``V``. Any orthonormal basis that contains the Krylov space gives valid Ritz values, and the
   residuals are computed, not inferred from a recurrence, so the test stays rigorous.
5. a Rayleigh–Ritz step on ``B`` itself: σ₁ … σ_k are the singular values of ``Bᵀ U``,
   ``U`` an orthonormal basis of ``V [y₁ … y_k]``, which gives small σ to an absolute ``ε·σ₁`` as
   the CPU engine's final step does.

A block of ``p ≥ k`` vectors finds an eigenvalue of multiplicity up to ``p`` as many times (a
single-vector Krylov space holds one vector of each eigenspace): the top two of a disconnected
union of equal components come out equal, as they are. A matrix not done after
:data:`MAX_BLOCKS` block steps is solved by ``eigh`` of its Gram matrix (exact, slow).

The eigenproblem of ``T`` grows with the basis; it is solved on the CPU (float64, small) only
when due: after the third check, halfway to the end that the residual's rate predicts (at most
:data:`MAX_SKIP` steps on; :func:`masktopo.analysis._dense._steps_needed`), as the CPU dense
route does.

References
----------
.. [GU77] G. H. Golub, R. Underwood, "The block Lanczos method for computing eigenvalues",
   Mathematical Software III, 1977.
.. [FNY15] T. Fukaya, Y. Nakatsukasa, Y. Yanagisawa, Y. Yamamoto, "CholeskyQR2: a simple and
   communication-avoiding algorithm for computing a tall-skinny QR factorization", 2014/2015.
.. [Par98] B. N. Parlett, *The Symmetric Eigenvalue Problem*, SIAM 1998, §11.5 (Rayleigh–Ritz
   on any orthonormal basis; residual bounds).
"""

from __future__ import annotations

import torch

from ._dense import MAX_SKIP, SEED, _steps_needed

#: Vectors per block: on a GPU a product with 16 vectors costs about what one costs (the Gram
#: matrix is read once either way), and a larger block needs fewer steps at the edge of the bulk.
BLOCK = 16
#: Block steps before a matrix falls back to ``eigh``.
MAX_BLOCKS = 80
#: Cholesky QR is used while the factor's smallest diagonal entry is at least this fraction of
#: its largest (a condition number of the block below ~10⁶, well inside the ~10⁸ for which two
#: passes give an orthonormal result, [FNY15]_).
CHOL_MIN_RATIO = 1e-6


def _orthonormal_against(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """An orthonormal block spanning ``Z`` (b, s, c) with ``V`` (b, s, k) projected out (step 4
    of the module docstring): CGS2, then Cholesky QR twice ([FNY15]_; batched ``bmm`` and
    ``c × c`` factorizations, where a batched Householder QR runs one matrix after another on a
    GPU). A block too ill-conditioned for it (a Cholesky factor failing or with a diagonal ratio
    below :data:`CHOL_MIN_RATIO`, as near an invariant subspace) takes Householder QR, one more
    projection and QR instead."""
    if V.shape[-1]:
        Vt = V.transpose(1, 2)
        Z = Z - V @ (Vt @ Z)
        Z = Z - V @ (Vt @ Z)
    Q = Z
    ok = torch.ones(Z.shape[0], dtype=torch.bool, device=Z.device)
    for _ in range(2):
        L, info = torch.linalg.cholesky_ex(Q.transpose(1, 2) @ Q)
        d = L.diagonal(dim1=1, dim2=2)
        ok &= (info == 0) & (d.amin(1) > CHOL_MIN_RATIO * d.amax(1))
        L = torch.where(
            ok[:, None, None], L, torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        )
        Q = torch.linalg.solve_triangular(L.transpose(1, 2), Q, upper=True, left=False)
    bad = (~ok).nonzero().squeeze(1)
    if bad.numel():
        Zb = Z[bad]
        Qb = torch.linalg.qr(Zb).Q
        if V.shape[-1]:
            Vb = V[bad]
            Qb = Qb - Vb @ (Vb.transpose(1, 2) @ Qb)
            Qb = torch.linalg.qr(Qb).Q
        Q[bad] = Qb
    return Q


def _top_pairs(T, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` eigenpairs of each symmetric ``T[i]`` (numpy, ``(a, n, n)``), descending:
    LAPACK's subset solver (``syevr``), a few milliseconds at n = 560 where a full ``eigh`` costs
    several times more."""
    import numpy as np
    import scipy.linalg

    n = T.shape[-1]
    th = np.empty((T.shape[0], k))
    Y = np.empty((T.shape[0], n, k))
    for i, t in enumerate(T):
        w, y = scipy.linalg.eigh(t, subset_by_index=[n - k, n - 1], check_finite=False)
        th[i], Y[i] = w[::-1], y[:, ::-1]
    return torch.from_numpy(th), torch.from_numpy(Y)


def top_krylov(
    B: torch.Tensor, k: int, tol: float, *, block: int = BLOCK, max_blocks: int = MAX_BLOCKS
) -> tuple[torch.Tensor, torch.Tensor]:
    """σ₁ … σ_k of every matrix of a dense batch by block Krylov on its Gram matrix.

    Parameters
    ----------
    B : torch.Tensor
        ``(b, s, l)`` float64 with ``s ≤ l`` (the smaller side first), on any device.
    k : int
        How many singular values, ``1 ≤ k ≤ block``.
    tol : float
        Residual tolerance relative to σ₁² (:data:`masktopo.analysis._engine.TOL`).
    block, max_blocks : int
        Vectors per block (at least ``k`` and 2) and the most block steps.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(b, k)`` float64 σ, descending, on ``B``'s device, and ``(b,)`` the block steps each
        matrix took (``-1``: not done within ``max_blocks``, solved by ``eigh`` instead).
    """
    b, s, _ = B.shape
    if not 1 <= k <= block:
        raise ValueError(f"k must be in [1, {block}], got {k}")
    dev = B.device
    if s < max(2, k):  # fewer rows than the values asked for: the Gram eigendecomposition
        _, W = torch.linalg.eigh(B @ B.transpose(1, 2))
        sv = torch.linalg.svdvals(B.transpose(1, 2) @ W)
        return torch.nn.functional.pad(sv, (0, k - s)), torch.full((b,), -1, dtype=torch.int64)
    p = max(2, k, min(block, s))
    cap = min(s, p * max_blocks)
    out = torch.zeros((b, k), dtype=torch.float64, device=dev)
    steps_of = torch.full((b,), -1, dtype=torch.int64)
    G = B @ B.transpose(1, 2)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    start = torch.randn((s, p), generator=gen, dtype=torch.float64).to(dev)
    Q = torch.linalg.qr(start).Q.expand(b, s, p).contiguous()
    V = torch.empty((b, s, cap), dtype=torch.float64, device=dev)
    T = torch.zeros((b, cap, cap), dtype=torch.float64, device=dev)
    act = torch.arange(b)  # the matrices still running, as indices into B
    kk = 0
    steps = 0
    check = 1
    history: list[tuple[int, float]] = []
    while act.numel():
        steps += 1
        c = Q.shape[-1]
        P = G @ Q
        V[:, :, kk : kk + c] = Q
        cross = V[:, :, : kk + c].transpose(1, 2) @ P
        T[:, : kk + c, kk : kk + c] = cross
        T[:, kk : kk + c, :kk] = cross[:, :kk].transpose(1, 2)
        T[:, kk : kk + c, kk : kk + c] = (cross[:, kk:] + cross[:, kk:].transpose(1, 2)) / 2
        kk += c
        full = kk >= cap
        if steps < check and not full:
            Q = _orthonormal_against(P, V[:, :, :kk])[:, :, : cap - kk]
            continue
        th, Y = _top_pairs(T[:, :kk, :kk].cpu().numpy(), k)
        th, Y = th.to(dev), Y.to(dev)  # (a, k) descending, (a, kk, k)
        X = V[:, :, :kk] @ Y  # (a, s, k): the Ritz vectors
        res = torch.linalg.vector_norm(G @ X - X * th[:, None, :], dim=1)  # (a, k)
        top = th[:, 0]
        met = (res <= tol * top[:, None]).all(1) | (top <= 0) | (kk >= s)  # kk ≥ s: exact
        done = met | full
        if done.any():
            idx = done.nonzero().squeeze(1)
            rows = act[idx.cpu()]
            U = torch.linalg.qr(X[idx]).Q
            sv = torch.linalg.svdvals(B[rows.to(dev)].transpose(1, 2) @ U)  # descending
            out[rows.to(dev)] = sv
            steps_of[rows[met[idx].cpu()]] = steps
            keep = (~done).nonzero().squeeze(1)
            act = act[keep.cpu()]
            if not act.numel():
                break
            G, V, T, P, res, top = G[keep], V[keep], T[keep], P[keep], res[keep], top[keep]
        if full:
            break
        history.append((steps, float((res.amax(1) / top.clamp_min(1e-300)).max())))
        need = _steps_needed(history, tol, max_blocks - steps)
        check = steps + min(MAX_SKIP, max(1, int(need // 2)))
        Q = _orthonormal_against(P, V[:, :, :kk])[:, :, : cap - kk]
    late = (steps_of < 0).nonzero().squeeze(1)
    if late.numel():  # not done within max_blocks: the exact Gram eigendecomposition
        rows = late.to(dev)
        Bl = B[rows]
        _, W = torch.linalg.eigh(Bl @ Bl.transpose(1, 2))
        out[rows] = torch.linalg.svdvals(Bl.transpose(1, 2) @ W[..., -k:])
    return out, steps_of
