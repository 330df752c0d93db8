"""Exact top-k selection with seeded random tie-breaking, and the iterative pruning schedules.

Every mask :mod:`masktopo.pai` returns keeps an exact number of entries. Scores are ranked with
:func:`torch.kthvalue`; entries strictly above the k-th largest score are kept, and among the
entries equal to it exactly the missing number is drawn uniformly at random with the caller's
``torch.Generator`` (methods-spec §1.3). The result does not depend on the order of equal scores in
memory, and ``-inf`` marks entries that must never be kept (pruned earlier in an iterative method).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import MaskValidationError, UnknownNameError
from .densities import apportion, keep_count

__all__ = ["SCHEDULES", "schedule_densities", "select_global", "select_local", "top_k_mask"]

#: Density schedules of iterative pruning (methods-spec §1.5, §6.1).
SCHEDULES = ("exponential", "linear")


def top_k_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool mask (same shape as ``scores``) of exactly ``k`` largest scores, ties broken at random.

    Parameters
    ----------
    scores : torch.Tensor
        Floating-point scores, any shape and device; ``-inf`` allowed, NaN not.
    k : int
        How many entries to keep, ``0 <= k <= scores.numel()``.
    generator : torch.Generator
        Draws the subset among scores equal to the k-th largest (only when there is a tie there).

    Returns
    -------
    torch.Tensor
        ``torch.bool``, on the device of ``scores``, with exactly ``k`` True entries.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise MaskValidationError(f"cannot keep {k} of {n} entries")
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if bool(torch.isnan(flat).any()):
        raise MaskValidationError("pruning scores contain NaN (non-finite weights or overflow)")
    kth = torch.kthvalue(flat, n - k + 1).values  # the k-th largest score
    keep = flat > kth
    need = k - int(keep.sum())
    if need:
        tied = torch.nonzero(flat == kth).reshape(-1)
        if need < tied.numel():
            pick = torch.randperm(tied.numel(), generator=generator, device=generator.device)
            tied = tied[pick[:need].to(tied.device)]
        keep[tied] = True
    return keep.reshape(scores.shape)


def select_global(
    scores: Mapping[str, torch.Tensor], k: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Keep the ``k`` largest scores over all layers together (global scope)."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    keep = top_k_mask(flat, k, generator)
    sizes = [scores[n].numel() for n in names]
    return {
        n: part.reshape(scores[n].shape)
        for n, part in zip(names, torch.split(keep, sizes), strict=True)
    }


def select_local(
    scores: Mapping[str, torch.Tensor], counts: Mapping[str, int], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Keep the ``counts[l]`` largest scores within each layer ``l`` (layer-wise scope)."""
    return {n: top_k_mask(s, counts[n], generator) for n, s in scores.items()}


def schedule_densities(density: float, iterations: int, schedule: str = "exponential"):
    """Densities after each of ``iterations`` pruning rounds, ending at ``density``.

    ``exponential``: ``d ** (j / J)`` (SynFlow, FORCE, iterative SNIP; equal to
    ``exp(-j ln(1/d) / J)``); ``linear``: ``1 - (1 - d) j / J``; for ``j = 1 .. J``.
    """
    if schedule == "exponential":
        return [density ** (j / iterations) for j in range(1, iterations + 1)]
    if schedule == "linear":
        return [1.0 - (1.0 - density) * j / iterations for j in range(1, iterations + 1)]
    raise UnknownNameError("pruning schedule", schedule, SCHEDULES)


def step_counts(final: int, n: int, densities: list[float]) -> list[int]:
    """Kept counts of an iterative schedule over ``n`` entries, ending exactly at ``final``.

    Round ``j`` keeps ``round(d_j n)``, clamped between ``final`` and the previous round's count,
    so counts never grow (a pruned entry is never needed back) and the last is exactly ``final``.
    """
    out, prev = [], n
    for d in densities[:-1]:
        prev = max(final, min(prev, keep_count(d, n)))
        out.append(prev)
    out.append(final)
    return out


def local_counts(sizes: Mapping[str, int], density: float) -> dict[str, int]:
    """Per-layer counts at one density for layer-wise scope: each ``floor``/``ceil`` of ``d N_l``,
    summing to ``round(d * sum N_l)`` (largest-remainder apportionment)."""
    names = list(sizes)
    total = keep_count(density, sum(sizes.values()))
    quotas = [density * sizes[n] for n in names]
    return dict(zip(names, apportion(quotas, [sizes[n] for n in names], total), strict=True))
