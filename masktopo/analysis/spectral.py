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

Routes of :func:`solve_many` (many matrices at once; :data:`ROUTES`):

``"auto"``
    The compiled CPU engine (:mod:`._kernels`) on the CPU. On an accelerator (CUDA) each matrix
    whose smaller side is at least :data:`DEVICE_MIN_SIDE` takes the batched Gram route there,
    and the others the CPU engine (:func:`on_device`): on an NVIDIA H200 (2026-12-04) the
    batched route was 5–15× slower than the 2-core CPU engine at ResNet sizes (smaller sides up
    to 1,000) and faster on Llama-2-7B layers (4,096), docs/performance.md "GPU suite".
``"batched"``
    The device route for every matrix on any device: the matrices densified, bucketed by padded
    shape and solved batched with the Gram route. On the CPU it lets the test suite check the
    CUDA code path against the CPU engine on machines without a GPU.

On the batched route a bucket whose smaller side is at least :data:`KRYLOV_MIN_SIDE` is solved
by batched block Krylov on its Gram matrices (:mod:`._krylov`: the residual test of the CPU
engine, then the same Rayleigh–Ritz step) instead of a full ``eigh`` of each.
"""

from __future__ import annotations

import contextlib
import heapq
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ..errors import UnknownNameError
from ..threads import default_threads, one_blas_thread
from ._engine import DENSE_ROUTE_MIN_SIDE, TOL, Parts, arpack_top, cost, pad_desc, solve_top2
from ._krylov import BLOCK as KRYLOV_BLOCK
from ._krylov import top_krylov

METHODS = ("auto", "dense", "gram", "sparse")

# Thresholds for method="auto" on the CPU (tuned with benchmarks/bench_analysis.py).
_DENSE_MAX_SIDE = 48  # smaller side up to this: full LAPACK SVD is cheapest
_GRAM_MIN_DENSITY = 0.08  # at or above this density, dense Gram + top-k eigh beats Lanczos
_GRAM_MAX_SIDE_ALWAYS = 160  # smaller side up to this: Gram is cheap at any density


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise UnknownNameError("spectral method", method, METHODS)
    return method


# --------------------------------------------------------------------------------------------
# CPU, one matrix at a time (numpy / scipy)
# --------------------------------------------------------------------------------------------


def _issparse(B) -> bool:
    """``scipy.sparse.issparse`` without importing scipy (~0.15 s, which PAGS and the analysis of
    dense or :class:`~masktopo.analysis._engine.Parts` inputs never need): a scipy matrix can
    only exist once ``scipy.sparse`` is imported."""
    mod = sys.modules.get("scipy.sparse")
    return mod is not None and mod.issparse(B)


@one_blas_thread()
def _sv_dense_np(B, k: int) -> np.ndarray:
    if _issparse(B):
        B = B.toarray()
    if min(B.shape) == 0:
        return np.zeros(k)
    return pad_desc(np.linalg.svd(np.asarray(B, dtype=np.float64), compute_uv=False), k)


@one_blas_thread(scipy_linalg=True)
def _sv_gram_np(B, k: int) -> np.ndarray:
    m, n = B.shape
    s = min(m, n)
    if s == 0:
        return np.zeros(k)
    if s <= k:
        return _sv_dense_np(B, k)
    if _issparse(B):
        B = B.tocsr()
        G = (B @ B.T if m <= n else B.T @ B).toarray()
    else:
        B = np.asarray(B, dtype=np.float64)
        G = B @ B.T if m <= n else B.T @ B
    import scipy.linalg

    _, V = scipy.linalg.eigh(
        G, subset_by_index=[s - k, s - 1], driver="evr", overwrite_a=True, check_finite=False
    )
    Y = B.T @ V if m <= n else B @ V  # Rayleigh–Ritz: σ(BᵀV) are the Ritz values
    return pad_desc(np.linalg.svd(np.asarray(Y), compute_uv=False), k)


@one_blas_thread(scipy_linalg=True)
def _sv_sparse_np(B, k: int) -> np.ndarray:
    m, n = B.shape
    if min(m, n) <= k + 1:
        return _sv_dense_np(B, k)
    import scipy.sparse as sp
    import scipy.sparse.linalg

    A = sp.csr_matrix(B, dtype=np.float64)
    if A.nnz == 0:
        return np.zeros(k)
    try:
        return arpack_top(A, k)
    except (
        scipy.sparse.linalg.ArpackNoConvergence,
        scipy.sparse.linalg.ArpackError,
    ):  # pragma: no cover - rare
        return _sv_gram_np(A, k)


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
        nnz = B.nnz if _issparse(B) else int(np.count_nonzero(B))
        method = _auto_cpu(m, n, nnz)
    return _CPU[method](B, k)


# --------------------------------------------------------------------------------------------
# torch, batched (any device; the CUDA path)
# --------------------------------------------------------------------------------------------


#: Smaller side from which the batched route takes block Krylov rather than a full ``eigh`` of
#: each Gram matrix (on every device: the CPU runs the CUDA code path). σ₂ at the edge of the
#: bulk needs a Krylov basis of ~30–60 % of the side below ~1,000, so only large sides gain: on
#: the 2-core CPU (batches of 4, 1 % and 50 % density, docs/performance.md "GPU suite") Krylov
#: took 1.2–1.9× eigh's time at sides 256–1,024 and 0.67–0.69× at 2,048. A full ``eigh`` runs
#: one matrix after another on a GPU (3.5 s of a Llama-2-7B block on an H200); there the
#: crossover is not measured yet. Equal to :data:`DEVICE_MIN_SIDE`: what ``route="auto"`` sends
#: to a GPU takes Krylov.
KRYLOV_MIN_SIDE = 2048


def batched_top_singular_values(B: torch.Tensor, k: int) -> torch.Tensor:
    """Batched top-``k`` σ in float64 of ``B`` (b, m, n), on its device: the device route's
    solver, in torch on any device. For a smaller side of at least :data:`KRYLOV_MIN_SIDE` (and
    ``k`` ≤ its block), block Krylov on the Gram matrices
    (:func:`masktopo.analysis._krylov.top_krylov`); below, Gram + ``eigh`` + Rayleigh–Ritz.
    Returns ``(b, k)``, descending."""
    m, n = B.shape[1:]
    s = min(m, n)
    B = B.to(torch.float64)
    if s <= k:
        out = torch.linalg.svdvals(B)
        return torch.nn.functional.pad(out, (0, k - s))
    if s >= KRYLOV_MIN_SIDE and k <= KRYLOV_BLOCK:
        return top_krylov(B if m <= n else B.transpose(1, 2), k, TOL)[0]
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
    >>> s = top_singular_values(torch.ones(3, 4, dtype=torch.bool))  # K_{3,4}: σ₁ = √12, σ₂ = 0
    >>> round(float(s[0]) ** 2, 10), float(s[1]) < 1e-14  # σ₂ to ε·σ₁, not exactly 0
    (12.0, True)
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
        out = batched_top_singular_values(Bb, k)
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
    if not _issparse(M):
        M = np.asarray(M, dtype=np.float64)
    return top_singular_values_np(M, k, method=method)


#: Routes of :func:`solve_many` (module docstring).
ROUTES = ("auto", "batched")

#: Smaller side of a matrix from which ``route="auto"`` solves it on an accelerator rather than
#: on the CPU engine. Measured on an H200 (docs/performance.md, "GPU suite"): the CPU engine won
#: at sides up to 1,000, the device at 4,096; the crossover in between is not measured, and
#: 2,048 lies between the two.
DEVICE_MIN_SIDE = 2048


def check_route(route: str) -> str:
    """``route`` if it is one of :data:`ROUTES` (else the usual unknown-name error)."""
    if route not in ROUTES:
        raise UnknownNameError("route", route, ROUTES)
    return route


def on_device(side: int, device: str | torch.device | None, route: str = "auto") -> bool:
    """Whether a matrix whose smaller side is ``side`` is solved on the batched device route.

    ``route="batched"``: always (on the CPU too). ``"auto"``: on an accelerator, when ``side`` is
    at least :data:`DEVICE_MIN_SIDE`; never on the CPU (or ``device=None``).

    Examples
    --------
    >>> on_device(512, "cuda"), on_device(4096, "cuda"), on_device(4096, "cpu")
    (False, True, False)
    >>> on_device(8, "cpu", route="batched")
    True
    """
    if check_route(route) == "batched":
        return True
    return device is not None and torch.device(device).type != "cpu" and side >= DEVICE_MIN_SIDE


def solve_many(
    mats: Sequence,
    k: int = 2,
    *,
    device: str | torch.device = "cpu",
    route: str = "auto",
) -> np.ndarray:
    """Top-``k`` singular values of many sparse matrices of different shapes.

    ``mats`` holds :class:`~masktopo.analysis._engine.Parts`, scipy sparse matrices, arrays, or
    :class:`~masktopo.analysis._kernels.Block` items of many matrices each (a layer's IMDB
    groups). On the CPU (``k = 2``) the exact compiled engine of :mod:`masktopo.analysis._kernels`
    solves them one after the other (dense Gram route for a small side, Lanczos on each
    connected component otherwise), split over the threads of :func:`cpu_workers`. The matrices
    that :func:`on_device` sends to the device (on CUDA: a smaller side of at least
    :data:`DEVICE_MIN_SIDE`; every matrix with ``route="batched"``) are densified there, bucketed
    by padded shape (zero padding changes no singular value) and solved batched with the Gram
    route. A Block none of whose matrices goes to the device stays whole on the CPU, where
    :func:`~masktopo.analysis._engine.solve_top2` may take its dense BLAS route; everything the
    CPU solves is split over its threads in one call, by predicted cost
    (:func:`~masktopo.analysis._engine.cost`). Returns a
    ``(matrices, k)`` float64 array, descending, a Block's matrices in its order.
    """
    from ._kernels import Block, unpack

    device = torch.device(device)
    blocks, block_rows, parts, part_rows = [], [], [], []
    row = 0
    for M in mats:
        if isinstance(M, Block):
            side = int(np.minimum(M.shapes[:, 0], M.shapes[:, 1]).max(initial=0))
            rows = list(range(row, row + M.count))
            row += M.count
            if k == 2 and not on_device(side, device, route):
                blocks.append(M)
                block_rows.append(rows)
            else:
                parts.extend(Parts(*unpack(M, i)) for i in range(M.count))
                part_rows.extend(rows)
        else:
            parts.append(Parts.of(M))
            part_rows.append(row)
            row += 1
    out = np.zeros((row, k))
    there = np.array([on_device(min(P.shape), device, route) for P in parts], dtype=bool)
    if k == 2:  # everything the CPU solves, Blocks and matrices, in one cost-balanced call
        here = np.flatnonzero(~there)
        if blocks or here.size:
            rows = [r for b in block_rows for r in b] + [part_rows[i] for i in here]
            jobs = blocks + [parts[i] for i in here]
            out[np.array(rows, dtype=np.int64)] = _solve_top2_parallel(jobs)
        away = np.flatnonzero(there)
        parts, part_rows = [parts[i] for i in away], [part_rows[i] for i in away]
        there = there[away]
    if parts:
        out[np.array(part_rows, dtype=np.int64)] = _solve_parts(parts, k, device, there)
    return out


def _solve_parts(parts: Sequence[Parts], k: int, device: torch.device, there: np.ndarray
                 ) -> np.ndarray:  # fmt: skip
    """:func:`solve_many` of single matrices, those flagged in ``there`` on the device; the
    others (only for ``k ≠ 2``: :func:`solve_many` solves the CPU's share of ``k = 2`` itself)
    by :func:`top_singular_values_np`."""
    out = np.zeros((len(parts), k))
    here = np.flatnonzero(~there)
    if here.size:
        out[here] = np.stack([top_singular_values_np(parts[i].scipy(), k) for i in here])
    away = np.flatnonzero(there)
    if away.size:  # within ~1 GiB of float64 per batch
        for chunk, batch in dense_batches([parts[i] for i in away], device, 1 << 27):
            out[away[chunk]] = batched_top_singular_values(batch, k).cpu().numpy()
    return out


def dense_batches(parts: Sequence[Parts], device, max_entries: int):
    """The matrices ``parts`` densified on ``device``, bucketed by padded shape: yields
    ``(indices, batch)`` with ``batch`` a float64 ``(len(indices), m, n)`` tensor, smaller side
    first (orientation and zero padding change no singular value), at most ``max_entries``
    entries per batch. Matrices without nonzeros are left out. Shared by :func:`solve_many`'s
    batched route and the PAGS ranking pass on the same route.

    Each batch crosses to the device as its matrices' CSR arrays as they are (the values, the
    int32 column indices, and per row one int64 offset), and the entries' flat positions are
    formed there: ``offset[row] + column·stride``, with stride ``n`` for a matrix stored
    transposed. Building int64 (matrix, row, column) triples on the host instead cost 32 bytes
    an entry of host work and copying; on an H200 it was half of a Llama-2-7B block's time
    (docs/performance.md, "GPU suite").
    """
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, P in enumerate(parts):
        if P.nnz:
            m, n = sorted(P.shape)
            buckets.setdefault((round_up_side(m), round_up_side(n)), []).append(i)
    for (m, n), idx in buckets.items():
        per = max(1, int(max_entries // max(1, m * n)))
        for start in range(0, len(idx), per):
            chunk = idx[start : start + per]
            ps = [parts[i] for i in chunk]
            offsets, lengths, strides, counts = [], [], [], []
            for j, P in enumerate(ps):
                rows = np.arange(P.shape[0], dtype=np.int64)
                flipped = P.shape[0] > P.shape[1]  # stored transposed: row r is column r
                offsets.append(j * m * n + (rows if flipped else rows * n))
                lengths.append(np.diff(P.indptr))
                strides.append(n if flipped else 1)
                counts.append(P.nnz)
            values = torch.from_numpy(np.concatenate([P.data for P in ps])).to(device)
            cols = torch.from_numpy(np.concatenate([P.indices for P in ps])).to(device)
            row_off = torch.from_numpy(np.concatenate(offsets)).to(device)
            row_len = torch.from_numpy(np.concatenate(lengths).astype(np.int64)).to(device)
            flat = torch.repeat_interleave(row_off, row_len, output_size=int(sum(counts)))
            if any(s != 1 for s in strides):
                stride = torch.repeat_interleave(
                    torch.tensor(strides, dtype=torch.int64, device=device),
                    torch.tensor(counts, dtype=torch.int64, device=device),
                    output_size=int(sum(counts)),
                )
                flat += cols.to(torch.int64) * stride
            else:
                flat += cols
            batch = torch.zeros((len(chunk), m, n), dtype=torch.float64, device=device)
            batch.view(-1)[flat] = values.to(torch.float64)
            yield chunk, batch


# Below this many nonzeros in a whole call, a second thread costs more than it saves.
_PARALLEL_MIN_NNZ = 250_000
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()  # .alone: this thread solves everything itself


@contextlib.contextmanager
def alone():
    """Within this context, the calling thread hands nothing to the worker threads: for callers
    that already spread their work over threads of their own (the run analysis's events)."""
    before = getattr(_LOCAL, "alone", False)
    _LOCAL.alone = True
    try:
        yield
    finally:
        _LOCAL.alone = before


def cpu_workers() -> int:
    """Threads (the caller's included) used by :func:`solve_many` and the layer rows on the CPU:
    :func:`masktopo.threads.default_threads` (``$MASKTOPO_WORKERS``, else the usable cores, at
    most :data:`masktopo.threads.MAX_THREADS`)."""
    return default_threads()


#: Most worker threads the pool holds (threads start only when work needs them); a
#: ``$MASKTOPO_WORKERS`` above it still splits the work that many ways.
_POOL_MAX = 64


def _worker_pool() -> ThreadPoolExecutor:
    """The analysis's worker threads, shared by every call of this process. The compiled
    kernels run without the GIL (:mod:`masktopo.analysis._kernels`), so the workers and the
    calling thread solve their parts at the same time in one process: no fork (unsafe in a
    multi-threaded process, which every process that imported torch is), no start-up, nothing
    copied between processes."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_POOL_MAX, thread_name_prefix="masktopo-spectral")
        return _POOL


def use_workers(total_nnz: int) -> bool:
    """Whether a CPU job of ``total_nnz`` stored entries is worth the worker threads."""
    if getattr(_LOCAL, "alone", False):
        return False
    return cpu_workers() >= 2 and total_nnz >= _PARALLEL_MIN_NNZ


def split_parts(costs, parts: int, remote_share: float = 0.5) -> list[list[int]]:
    """Indices split in ``parts`` cost-balanced parts; the first is the caller's.

    With two parts the second (the worker's) gets about ``remote_share`` of the total cost; with
    ``p`` parts the caller's share is ``2·(1 − remote_share)/p`` and the workers share the rest
    equally (a worker starts while the caller still prepares its own part, so it may take a
    little more). Greedy, largest first, each item to the part furthest below its share (a
    unit cost added per item). Deterministic; some parts may be empty when items are few.
    """
    costs = np.asarray(costs, dtype=np.float64)
    p = max(1, int(parts))
    if p == 1:
        return [list(range(len(costs)))]
    mine = min(1.0, 2.0 * (1.0 - remote_share) / p)
    share = [mine] + [(1.0 - mine) / (p - 1)] * (p - 1)
    out: list[list[int]] = [[] for _ in range(p)]
    load = [0.0] * p
    for i in np.argsort(-costs, kind="stable"):
        h = min(range(p), key=lambda j: (load[j] / share[j] if share[j] > 0 else np.inf, j))
        out[h].append(int(i))
        load[h] += float(costs[i]) + 1.0
    return out


def submit(fn, *args) -> Future:
    """Run ``fn(*args)`` in a worker thread; its future."""
    return _worker_pool().submit(fn, *args)


def in_threads(costs, solve, prepare=None, remote_share: float = 0.5) -> list[tuple[list, object]]:
    """``solve(prepare(part))`` for cost-balanced parts of the items, the parts in threads.

    The items (``costs``, one per item) are split by :func:`split_parts` into at most
    :func:`cpu_workers` non-empty parts. Every worker's part is prepared in this thread and
    handed to a worker (``prepare(part)``, default the part's index list itself), then this
    thread prepares and solves its own; returns ``[(part, result), ...]``, this thread's part
    first. Callers solve every item by the same code whichever part holds it, so results do
    not depend on the split. Call it where :func:`use_workers` allowed threads.
    """
    prepare = prepare or (lambda part: part)
    parts = [q for q in split_parts(costs, min(cpu_workers(), len(costs)), remote_share) if q]
    if not parts:
        return []
    futures = [submit(solve, prepare(q)) for q in parts[1:]]
    try:
        local = solve(prepare(parts[0]))
        return [(parts[0], local)] + [
            (q, f.result()) for q, f in zip(parts[1:], futures, strict=True)
        ]
    finally:
        for f in futures:
            f.cancel()


class JobStream:
    """Spectral jobs (:class:`Parts` and Blocks) solved while more are being planned.

    The worker threads (:func:`cpu_workers` − 1 of them) each take the most costly queued job
    (:func:`~masktopo.analysis._engine.cost`) as soon as one is queued (:meth:`add`);
    :meth:`finish` has the calling thread take jobs too until none is left, waits for the
    workers and returns the σ of every job, in the order added. Each job is solved alone by
    :func:`~masktopo.analysis._engine.solve_top2`, as in any split. Use it as a context
    manager: leaving it (also on an error) stops the workers.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []  # (-cost, index)
        self._jobs: list = []
        self._out: dict[int, np.ndarray] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._workers = [submit(self._work) for _ in range(max(0, cpu_workers() - 1))]

    def __enter__(self) -> JobStream:
        return self

    def __exit__(self, *exc) -> None:
        self._close(drop=exc[0] is not None)  # on an error the queued jobs are dropped
        for f in self._workers:
            f.result() if exc[0] is None else f.exception()

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, jobs: Sequence) -> None:
        """Queue jobs (solved in the order of their predicted cost, largest first)."""
        with self._cv:
            for J in jobs:
                heapq.heappush(self._heap, (-cost(J), len(self._jobs)))
                self._jobs.append(J)
            self._cv.notify_all()

    def _close(self, drop: bool = False) -> None:
        with self._cv:
            self._closed = True
            if drop:
                self._heap.clear()
            self._cv.notify_all()

    def _take(self, wait: bool) -> int | None:
        with self._cv:
            while not self._heap:
                if self._closed or not wait:
                    return None
                self._cv.wait()
            return heapq.heappop(self._heap)[1]

    def _work(self, wait: bool = True) -> None:
        while (i := self._take(wait)) is not None:
            self._out[i] = solve_top2([self._jobs[i]])

    def finish(self) -> np.ndarray:
        """Solve what is left here, wait for the workers; ``(matrices, 2)``, jobs in order."""
        self._close()
        self._work(wait=False)
        for f in self._workers:
            f.result()
        parts = [self._out[i] for i in range(len(self._jobs))]
        return np.concatenate(parts) if parts else np.zeros((0, 2))


def _solve_top2_parallel(mats: Sequence) -> np.ndarray:
    """:func:`solve_top2` with the jobs split in cost-balanced parts, one per thread; a
    :class:`~masktopo.analysis._kernels.Block` stays whole (its matrices' rows in its order).

    The split is deterministic (greedy by predicted nanoseconds, :func:`cost`, for matrices and
    Blocks alike), and every matrix is solved by the same code in any thread, so results do not
    depend on it.
    """
    from ._kernels import Block, job_count

    jobs = [M if isinstance(M, Block) else Parts.of(M) for M in mats]
    # One BLAS thread: the matrices are small enough that threads only add contention; the
    # dense route's eigensolver (scipy.linalg) loaded first, by this thread (one_blas_thread)
    big = any(min(J.shape) >= DENSE_ROUTE_MIN_SIDE for J in jobs if not isinstance(J, Block))
    with one_blas_thread(scipy_linalg=big):
        if not use_workers(sum(J.nnz for J in jobs)):
            return solve_top2(jobs)
        counts = np.array([job_count(J) for J in jobs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        costs = [cost(J) for J in jobs]
        out = np.zeros((int(counts.sum()), 2))
        for idx, sv in in_threads(costs, lambda idx: solve_top2([jobs[i] for i in idx])):
            rows = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in idx])
            out[rows] = sv
    return out


def round_up_side(x: int) -> int:
    """Round a side length up so that similar shapes share a bucket (powers of 2, in quarters)."""
    if x <= 32:
        return 32
    p = 1 << (x - 1).bit_length()
    for q in (p // 2 + p // 8, p // 2 + p // 4, p // 2 + 3 * p // 8):
        if q >= x:
            return q
    return p
