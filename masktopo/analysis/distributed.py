"""Analysis split over the processes of a ``torchrun`` launch (docs/llm.md).

Each process (rank) analyzes a share of the layers chosen by predicted cost, and rank 0 gathers
every row and puts them back in the model's order: one table, with the same rows as one process
computes (each layer is computed by the same code wherever it runs, :mod:`.metrics`).

The launch is read from the environment torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``); the process group uses ``gloo`` on the CPU and ``nccl`` with ``--device cuda``
(each rank on GPU ``LOCAL_RANK``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..distributed import World

__all__ = ["gather_rows", "split_by_cost"]


def split_by_cost(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices split into ``parts`` lists of about equal total cost: largest first, each to the
    least loaded part (ties: the lowest part). Deterministic; each list in ascending order.

    Examples
    --------
    >>> split_by_cost([5, 1, 4, 2, 3], 2)
    [[0, 1, 3], [2, 4]]
    """
    load = [0.0] * parts
    out: list[list[int]] = [[] for _ in range(parts)]
    for i in np.argsort(-np.asarray(costs, dtype=np.float64), kind="stable"):
        p = min(range(parts), key=lambda j: (load[j], j))
        out[p].append(int(i))
        load[p] += float(costs[i])
    return [sorted(x) for x in out]


def gather_rows(world: World, mine: list[tuple[int, Any]]) -> list[Any] | None:
    """On rank 0, every rank's ``(index, row)`` pairs as one list in index order; None on the
    other ranks (and ``mine`` in order when not distributed)."""
    if not world.distributed:
        return [row for _, row in sorted(mine, key=lambda x: x[0])]
    import torch.distributed as dist

    got: list[Any] | None = [None] * world.size if world.main else None
    dist.gather_object(mine, got, dst=0)
    if not world.main:
        return None
    pairs = [pair for part in got or [] for pair in part]
    return [row for _, row in sorted(pairs, key=lambda x: x[0])]
