"""Analysis split over the processes of a ``torchrun`` launch (docs/llm.md).

Each process (rank) analyzes a share of the layers chosen by predicted cost, and rank 0 gathers
every row and puts them back in the model's order: one table, with the same rows as one process
computes (each layer is computed by the same code wherever it runs, :mod:`.metrics`).

The launch is read from the environment torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``); the process group uses ``gloo`` on the CPU and ``nccl`` with ``--device cuda``
(each rank on GPU ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["World", "gather_rows", "init_world", "split_by_cost"]


class World:
    """The processes of this launch: ``rank`` of ``size`` (``0`` of ``1`` without torchrun)."""

    __slots__ = ("rank", "size")

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank = rank
        self.size = size

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the output (rank 0)."""
        return self.rank == 0


def init_world(device: str | None = None) -> World:
    """The launch's :class:`World`, with the default process group started when torchrun
    launched several processes and none is started yet.

    Parameters
    ----------
    device : {"cpu", "cuda"}, optional
        ``"cuda"``: the ``nccl`` backend, each rank on GPU ``LOCAL_RANK``; else ``gloo``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


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
