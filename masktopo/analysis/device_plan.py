"""Dense layers planned on their device: the device route without a host pattern.

On the device route (:func:`masktopo.analysis.spectral.on_device`: an accelerator, or
``route="batched"``), a layer used to be planned on the host: its kept entries gathered to
numpy, a CSR pattern built, its connected components, normalized values and IMDB degree groups
found by the compiled kernels, and only then its matrices densified again on the device. On an
H200 that host work was most of a Llama-2-7B block's time (docs/performance.md, "GPU suite"):
planning one ``4096 × 11008`` layer at 50 % takes ~2 s of one core, the device's spectra far
less.

A layer at :data:`MIN_DENSITY` or more (every pruned LLM projection) is dense on the device
anyway, so here it is planned there with whole-tensor operations, and nothing of size ``nnz``
crosses to the host:

* the stripped pattern ``M`` (rows and columns without a kept entry dropped), its edge count and
  active sides, from boolean reductions;
* its connected components by breadth-first search, two matrix–vector products per level
  (:func:`components`; after :data:`MAX_BFS_COMPONENTS` components the rest are counted on the
  host by the compiled union–find, the same number);
* the binary, weighted (``|W|`` on the pattern) and normalized (``D_r^{-1/2} M D_c^{-1/2}``)
  matrices, solved in one batch by the device route's solver
  (:func:`masktopo.analysis.spectral.batched_top_singular_values`: block Krylov on the Gram
  matrices from a smaller side of :data:`~masktopo.analysis.spectral.KRYLOV_MIN_SIDE`);
* the IMDB degree groups (pags-spec §3.4; :func:`imdb_groups`): columns by fan-out, a run of
  equal fan-out ``d ≥ 3`` with at least ``min_group`` columns that touches ``n_r ≥ 2`` rows and
  passes the gate on ``(d, d·|S_d|/n_r)``, each group's columns gathered into zero-padded
  batches of similar widths and solved by the same solver (zero rows and columns change no
  singular value).

The row of a layer is :func:`masktopo.analysis.metrics.layer_metrics`'s, to the solvers'
precision (``~ε·σ₁``; tested against the CPU engine to 1e-9 relative, integers exactly).
"""

from __future__ import annotations

import numpy as np
import torch

from ..threads import one_blas_thread
from ._engine import DENSE_ROUTE_MAX_ENTRIES, DENSE_ROUTE_MIN_DENSITY

__all__ = ["MAX_BFS_COMPONENTS", "MIN_DENSITY", "components", "imdb_groups", "plan_dense",
           "planned_on_device"]  # fmt: skip

#: Density from which a layer on the device route is planned there (the CPU engine's dense
#: route threshold: below it the layer's pattern is cheaper than its dense matrix).
MIN_DENSITY = DENSE_ROUTE_MIN_DENSITY
#: Components found by breadth-first search on the device; a pattern with more is counted on
#: the host (:func:`masktopo.analysis._kernels.count_components`).
MAX_BFS_COMPONENTS = 16
#: Entries (float64) of one padded batch of IMDB groups.
GROUP_BATCH_ENTRIES = 1 << 27


def _as_matrix(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], -1)


def planned_on_device(mask: torch.Tensor, opts) -> bool:
    """Whether a layer on the device route is planned on its device: a linear layer, or a conv
    read unrolled (``out × in·k``), with at least :data:`MIN_DENSITY` of its entries kept and at
    most :data:`~masktopo.analysis._engine.DENSE_ROUTE_MAX_ENTRIES` entries in all."""
    if mask.dim() < 2 or (mask.dim() > 2 and opts.conv != "unrolled"):
        return False
    numel = mask.numel()
    if not 0 < numel <= DENSE_ROUTE_MAX_ENTRIES:
        return False
    return int(torch.count_nonzero(mask)) >= MIN_DENSITY * numel


def components(M: torch.Tensor) -> int:
    """Connected components of the bipartite graph of a stripped pattern ``M`` (boolean, every
    row and column with a kept entry): breadth-first search from the first unreached row, a
    level being two products with ``M`` (float32: only whether a count is positive is read).
    After :data:`MAX_BFS_COMPONENTS` the rest are counted on the host."""
    m = M.shape[0]
    A = M.to(torch.float32)
    reached = torch.zeros(m, dtype=torch.bool, device=M.device)
    count = 0
    while count < MAX_BFS_COMPONENTS:
        left = torch.nonzero(~reached)
        if left.numel() == 0:
            return count
        rows = torch.zeros(m, dtype=torch.bool, device=M.device)
        rows[left[0, 0]] = True
        size = 1
        while True:
            cols = (rows.to(torch.float32) @ A) > 0
            rows = (A @ cols.to(torch.float32)) > 0
            grown = int(rows.sum())
            if grown == size:
                break
            size = grown
        reached |= rows
        count += 1
    if bool(reached.all()):
        return count
    from ._kernels import count_components

    sub = M[~reached]  # the rows not reached, with every column: columns of reached rows are
    sub = sub[:, sub.any(0)]  # in reached components only (no edge leaves a component)
    indptr = np.zeros(sub.shape[0] + 1, dtype=np.int32)  # at most 2²⁶ entries
    indptr[1:] = np.cumsum(sub.sum(1).cpu().numpy())
    indices = torch.nonzero(sub)[:, 1].to(torch.int32).cpu().numpy()
    return count + int(count_components(indptr, indices, sub.shape[0], sub.shape[1]))


def imdb_groups(M: torch.Tensor, min_group: int, both_three: bool
                ) -> list[tuple[int, int, int, torch.Tensor]]:  # fmt: skip
    """The IMDB degree groups of a stripped pattern ``M`` (boolean): ``(d, |S_d|, n_r,
    columns)`` by ascending fan-out ``d``, as :func:`masktopo.analysis._kernels.imdb_groups`
    keeps them (``d ≥ 3``, at least ``min_group`` columns, ``n_r ≥ 2`` rows touched, the gate
    ``d_out = d·|S_d|/n_r > 1``, or ``≥ 3`` and ``d ≥ 3`` with ``both_three``); ``columns`` the
    group's column indices (ascending, on ``M``'s device)."""
    fan = M.sum(0)
    fan_sorted, order = torch.sort(fan, stable=True)
    d, size = torch.unique_consecutive(fan_sorted, return_counts=True)
    start = torch.cumsum(size, 0) - size
    d, size, start = d.tolist(), size.tolist(), start.tolist()
    out = []
    for dg, sg, st in zip(d, size, start, strict=True):
        if dg < 3 or sg < min_group:
            continue
        cols = order[st : st + sg]
        n_r = int(M[:, cols].any(1).sum())
        d_out = dg * sg / n_r
        if n_r >= 2 and (d_out >= 3 if both_three else d_out > 1):
            out.append((int(dg), int(sg), n_r, cols))
    return out


def _group_batches(groups, rows: int):
    """Indices of ``groups`` in batches of similar padded width (at most
    :data:`GROUP_BATCH_ENTRIES` entries each, of ``rows`` rows), with that width."""
    from .spectral import round_up_side

    buckets: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        buckets.setdefault(round_up_side(g[1]), []).append(i)
    for width, idx in sorted(buckets.items()):
        per = max(1, GROUP_BATCH_ENTRIES // max(1, width * rows))
        for s in range(0, len(idx), per):
            yield idx[s : s + per], width


@one_blas_thread()  # LAPACK on one thread, one limit for all the batches
def _solve_groups(groups, mats: list[torch.Tensor]) -> list[np.ndarray]:
    """σ₁, σ₂ of every group's columns of each matrix in ``mats`` (same shape, float64):
    ``(len(groups), 2)`` per matrix.

    Per padded batch ``X`` (groups × rows × width), as the host's
    :func:`masktopo.analysis._dense.top2_block`: the Gram matrices of the smaller side on the
    device (batched GEMM), their top two eigenvectors ``V`` by LAPACK on the host (small:
    cuSOLVER would solve them one after another above side 32, ~ms each), then the
    Rayleigh–Ritz step ``Y = XᵀV`` on the device and ``σ(Y)`` on the host (exact to ``ε·σ₁``)."""
    out = [np.zeros((len(groups), 2)) for _ in mats]
    if not groups:
        return out
    m = mats[0].shape[0]
    pad = mats[0].shape[1]  # index of the zero column appended to each matrix
    ext = [torch.nn.functional.pad(X, (0, 1)) for X in mats]
    for idx, width in _group_batches(groups, m):
        cols = torch.full((len(idx), width), pad, dtype=torch.int64, device=mats[0].device)
        for j, i in enumerate(idx):
            cols[j, : groups[i][1]] = groups[i][3]
        for X, o in zip(ext, out, strict=True):
            batch = X[:, cols].permute(1, 0, 2)  # (groups, m, width)
            if width > m:  # the smaller side first
                batch = batch.transpose(1, 2)
            gram = batch.transpose(1, 2) @ batch
            _, V = np.linalg.eigh(gram.cpu().numpy())
            Y = batch @ torch.from_numpy(np.ascontiguousarray(V[..., -2:])).to(batch.device)
            o[idx] = np.linalg.svd(Y.cpu().numpy(), compute_uv=False)
    return out


def plan_dense(mask: torch.Tensor, weight: torch.Tensor | None, imdb_rule: tuple[int, bool],
               quantities) -> tuple[tuple[int, int, int, int, int, int], dict]:  # fmt: skip
    """Plan one dense layer on its device and solve its spectra there.

    Parameters
    ----------
    mask : torch.Tensor
        The layer's mask (boolean), on the device where it is planned; a conv is read unrolled.
    weight : torch.Tensor or None
        Its weight (same shape, same device; only ``|w|`` on the mask is read), or None.
    imdb_rule : (int, bool)
        The IMDB variant's ``(min_group, both_three)`` (:func:`imdb_groups`; the analysis's
        ``metrics._imdb_rule``).
    quantities : collection of str
        What the selected metrics need (:attr:`Selection.quantities`).

    Returns
    -------
    (tuple, dict)
        ``(n_out, n_in, numel, n_edges, n_out_active, n_in_active)`` and the quantities:
        ``"components"``, ``"imdb_groups"`` (a list of ``(d, |S_d|, n_r)``) and the σ of each
        spectral job, keyed as :func:`masktopo.analysis.metrics` keys them (``"sv_binary"``,
        ``"sv_weighted"``, ``"sv_normalized"``, ``("imdb_groups", d)``,
        ``("imdb_weighted", d)``).
    """
    B = _as_matrix(mask).to(torch.bool)
    n_out, n_in = B.shape
    rows, cols = B.any(1), B.any(0)
    M = B[rows][:, cols]
    n_o, n_i = M.shape
    n_edges = int(M.sum())
    counts = (n_out, n_in, mask.numel(), n_edges, n_o, n_i)
    found: dict = {}
    if n_edges == 0:
        return counts, found
    if "components" in quantities:
        found["components"] = components(M)
    weighted = weight is not None
    W = None
    if weighted and ("sv_weighted" in quantities or "imdb_weighted" in quantities):
        W = _as_matrix(weight).detach()[rows][:, cols].to(torch.float64).abs() * M
    Mf = M.to(torch.float64)
    jobs = []
    if "sv_binary" in quantities:
        jobs.append(("sv_binary", Mf))
    if "sv_weighted" in quantities and W is not None:
        jobs.append(("sv_weighted", W))
    if "sv_normalized" in quantities and min(n_o, n_i) >= 2:
        r = Mf.sum(1, keepdim=True)
        c = Mf.sum(0, keepdim=True)
        jobs.append(("sv_normalized", Mf / torch.sqrt(r * c)))
    if jobs:
        from .spectral import batched_top_singular_values

        sv = batched_top_singular_values(torch.stack([X for _, X in jobs]), 2).cpu().numpy()
        found.update({key: sv[i] for i, (key, _) in enumerate(jobs)})
        del jobs, sv
    binary = "imdb_groups" in quantities
    weighted_groups = "imdb_weighted" in quantities and W is not None
    if binary or weighted_groups:
        groups = imdb_groups(M, *imdb_rule)
        found["imdb_groups"] = [g[:3] for g in groups]
        mats = ([Mf] if binary else []) + ([W] if weighted_groups else [])
        solved = _solve_groups(groups, mats)
        keys = (["imdb_groups"] if binary else []) + (["imdb_weighted"] if weighted_groups else [])
        for key, sv in zip(keys, solved, strict=True):
            for g, s in zip(groups, sv, strict=True):
                found[(key, g[0])] = s
    return counts, found
