r"""Structure of a layer mask that the spectrum does not show: N:M patterns and degree spread.

N:M semi-structured sparsity ([Mishra21]_, NVIDIA's 2:4 sparse tensor cores; [Zhou21]_ for
general N:M) keeps at most ``N`` of every ``M`` consecutive weights along the input dimension.
Write ``B`` for the ``n_out × n_in`` biadjacency (a conv unrolled, ``n_in = C_in·k_h·k_w``) and,
for a group size ``M`` dividing ``n_in``,

.. math::  N(M) = \max_{r,\,g} \sum_{j=0}^{M-1} B_{r,\,gM+j},

the most entries any group of ``M`` keeps. The layer is ``N(M):M`` for every such ``M``; a 2:4
layer is also 4:8 and 8:16 (the ratio ``N(M)/M`` can only fall as groups merge). A group size
counts when its bound is *tight*, ``N(M) < M`` and the groups keep more than ``N(M) − 1`` on
average (``density·M > N(M) − 1``): a pruner enforced it. Without that test, chance makes every
small unstructured layer look N:M (a 256 × 512 random mask of density 0.5 is "15:16": none of
its 8,192 groups of 16 happens to be full). The reported pattern is the tight ``M ≤ 16`` of the
smallest ratio ``N(M)/M``, the smallest ``M`` among ties (so 2:4 reads ``"2:4"``, a 4:8 layer
that is not 2:4 reads ``"4:8"``); ``""`` when no ``M`` is tight (unstructured) or the mask is
empty.

Degree statistics over *all* nodes (isolated ones count as degree 0, unlike ``deg_out_mean``
and ``deg_in_mean`` of :mod:`masktopo.analysis.metrics`, which average over active nodes):
``deg_out_*`` of the output (row) degrees, the fan-in of each output; ``deg_in_*`` of the input
(column) degrees. Wanda [Sun24]_ prunes per output row, so its rows all keep the same count
(``deg_out_std = 0``) while its columns do not; magnitude pruning over a whole layer has neither.

References
----------
.. [Mishra21] A. Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021.
.. [Zhou21] A. Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
   Scratch", ICLR 2021.
.. [Sun24] M. Sun, Z. Liu, A. Bair, J. Z. Kolter, "A Simple and Effective Pruning Approach for
   Large Language Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_M",
    "STRUCTURE_COLUMNS",
    "degree_stats",
    "network_structure",
    "nm_counts",
    "nm_pattern",
    "prune_nm",
    "prune_per_row",
    "structure_columns",
]

#: Largest group size tried by :func:`nm_pattern`.
MAX_M = 16
#: Columns of :func:`structure_columns`, in order.
STRUCTURE_COLUMNS = ("nm", "deg_out_min", "deg_out_max", "deg_out_std", "deg_in_min",
                     "deg_in_max", "deg_in_std")  # fmt: skip
#: Integer columns among them (``Int64`` in a table).
INT_COLUMNS = ("deg_out_min", "deg_out_max", "deg_in_min", "deg_in_max")


def _matrix(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """The mask as a 2-D bool array ``n_out × n_in`` (a conv unrolled), without a copy when it
    is already a contiguous CPU bool tensor."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach()
        if mask.dtype != torch.bool:
            mask = mask != 0
        mask = mask.cpu().numpy()
    a = np.asarray(mask)
    if a.dtype != np.bool_:
        a = a != 0
    return a.reshape(a.shape[0], -1)


def nm_counts(mask, max_m: int = MAX_M) -> dict[int, int]:
    """``{M: N(M)}`` for every ``2 ≤ M ≤ max_m`` that divides ``n_in`` (module docstring).

    Powers of two are summed pairwise from the groups of half their size (one pass over the
    mask, then over halves), other sizes directly.

    Examples
    --------
    >>> import torch
    >>> nm_counts(torch.tensor([[1, 1, 0, 0, 0, 1, 1, 0]], dtype=torch.bool))
    {2: 2, 4: 2, 8: 4}
    """
    B = _matrix(mask)
    n_out, n_in = B.shape
    out: dict[int, int] = {}
    if n_in < 2:
        return out
    sums = None  # group sums for the current power of two
    m = 1
    while 2 * m <= max_m and n_in % (2 * m) == 0:
        if sums is None:
            sums = B.view(np.uint8).reshape(n_out, -1, 2).sum(axis=2, dtype=np.uint8)
        else:
            sums = sums.reshape(n_out, -1, 2).sum(axis=2, dtype=np.uint8)
        m *= 2
        out[m] = int(sums.max())
    for M in range(3, max_m + 1):
        if M & (M - 1) and n_in % M == 0:
            out[M] = int(B.reshape(n_out, -1, M).sum(axis=2, dtype=np.uint8).max())
    return dict(sorted(out.items()))


def nm_pattern(mask, max_m: int = MAX_M) -> str:
    """The layer's N:M pattern, ``"N:M"``, or ``""`` when it has none (module docstring).

    Examples
    --------
    >>> import torch
    >>> nm_pattern(torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool))
    '2:4'
    >>> nm_pattern(torch.ones(2, 8, dtype=torch.bool))
    ''
    """
    B = _matrix(mask)
    return _pattern(nm_counts(B, max_m), np.count_nonzero(B) / max(B.size, 1))


def _pattern(counts: dict[int, int], density: float) -> str:
    """:func:`nm_pattern` from :func:`nm_counts` and the density."""
    best: tuple[float, int] | None = None
    for M, N in counts.items():
        tight = 0 < N < M and density * M > N - 1
        if tight and (best is None or N / M < best[0]):
            best = (N / M, M)
    if best is None:
        return ""
    return f"{counts[best[1]]}:{best[1]}"


def degree_stats(mask) -> dict[str, Any]:
    """Min, max and standard deviation of the output (row) and input (column) degrees, over
    all nodes (module docstring): ``deg_out_min``, ``deg_out_max``, ``deg_out_std``,
    ``deg_in_min``, ``deg_in_max``, ``deg_in_std``.

    Examples
    --------
    >>> import torch
    >>> d = degree_stats(torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))
    >>> d["deg_out_min"], d["deg_out_max"], d["deg_in_max"], d["deg_in_min"]
    (1, 2, 2, 0)
    """
    B = _matrix(mask)
    return _degree_columns(np.count_nonzero(B, axis=1), np.count_nonzero(B, axis=0))


def _degree_columns(rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    """:func:`degree_stats` from the row and column degrees (int64)."""
    out: dict[str, Any] = {}
    for side, deg in (("out", rows), ("in", cols)):
        out[f"deg_{side}_min"] = int(deg.min())
        out[f"deg_{side}_max"] = int(deg.max())
        out[f"deg_{side}_std"] = float(deg.std())
    return out


def structure_columns(mask) -> dict[str, Any]:
    """:data:`STRUCTURE_COLUMNS` of one layer: :func:`nm_pattern` and :func:`degree_stats`; for a
    tensor on an accelerator, reduced there (:func:`device_columns`)."""
    if isinstance(mask, torch.Tensor) and mask.device.type != "cpu":
        return device_columns(mask)
    return {"nm": nm_pattern(mask), **degree_stats(mask)}


def device_columns(mask: torch.Tensor, max_m: int = MAX_M) -> dict[str, Any]:
    """:func:`structure_columns` of a tensor reduced on its own device: the group sums of every
    ``M`` and the degrees there, only their maxima and the degree vectors copied to the host
    (a Llama-2-7B MLP mask took 0.57 s of host time on 2 cores). The same values."""
    B = mask.detach()
    B = (B if B.dtype == torch.bool else B != 0).reshape(B.shape[0], -1)
    n_out, n_in = B.shape
    counts = {M: int(B.reshape(n_out, -1, M).sum(2).max())
              for M in range(2, max_m + 1) if n_in >= 2 and n_in % M == 0}  # fmt: skip
    rows, cols = B.sum(1), B.sum(0)
    density = int(rows.sum()) / max(B.numel(), 1)
    return {
        "nm": _pattern(counts, density),
        **_degree_columns(rows.cpu().numpy(), cols.cpu().numpy()),
    }


def network_structure(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The network values of the structure columns of some layer rows: ``nm`` when every layer
    has the same pattern (else ``""``), the smallest minimum and the largest maximum degree;
    ``deg_*_std`` NaN (a spread over different layers' nodes means nothing)."""
    if not rows:
        return {}
    nms = {r["nm"] for r in rows}
    out: dict[str, Any] = {"nm": nms.pop() if len(nms) == 1 else ""}
    for side in ("out", "in"):
        out[f"deg_{side}_min"] = min(int(r[f"deg_{side}_min"]) for r in rows)
        out[f"deg_{side}_max"] = max(int(r[f"deg_{side}_max"]) for r in rows)
        out[f"deg_{side}_std"] = math.nan
    return out


def prune_per_row(weight: torch.Tensor, density: float) -> torch.Tensor:
    """``weight`` with all but the ``round(density·n_in)`` largest-magnitude entries of each row
    set to 0 (Wanda's per-output comparison group [Sun24]_, with plain magnitudes as scores).
    For tests and benchmarks: synthetic pruned LLM layers."""
    keep = max(0, min(weight.shape[1], round(density * weight.shape[1])))
    idx = weight.abs().float().topk(keep, dim=1).indices
    out = torch.zeros_like(weight)
    return out.scatter_(1, idx, weight.gather(1, idx))


def prune_nm(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``weight`` with all but the ``n`` largest-magnitude entries of every group of ``m``
    consecutive inputs set to 0 (N:M sparsity, [Zhou21]_). ``n_in`` must be a multiple of ``m``."""
    rows, cols = weight.shape
    g = weight.reshape(rows, cols // m, m)
    idx = g.abs().float().topk(n, dim=2).indices
    out = torch.zeros_like(g).scatter_(2, idx, g.gather(2, idx))
    return out.reshape(rows, cols)
