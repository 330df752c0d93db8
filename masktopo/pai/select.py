"""Exact top-k selection with seeded random tie-breaking, and the iterative pruning schedules.

Every mask :mod:`masktopo.pai` returns keeps an exact number of entries. The k-th largest score
is found with :func:`torch.topk`; entries strictly above it are kept, and among the entries equal
to it exactly the missing number is drawn uniformly at random with the caller's
``torch.Generator`` (methods-spec §1.3). The result does not depend on the order of equal scores in
memory, and ``-inf`` marks entries that must never be kept (pruned earlier in an iterative method).

:func:`top_k_pending` does the same selection without reading anything back from the device; it
says on the device whether the scores held a NaN or the tied entries need the random draw (whose
length depends on the data), so a caller can check many selections with one read
(:func:`masktopo.trainer.core.rewire_pending`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import MaskValidationError, UnknownNameError
from .densities import apportion, keep_count

__all__ = [
    "SCHEDULES",
    "schedule_densities",
    "select_global",
    "select_local",
    "top_k_mask",
    "top_k_mask_drawn",
    "top_k_pending",
]

#: Density schedules of iterative pruning (methods-spec §1.5, §6.1).
SCHEDULES = ("exponential", "linear")


def _kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest value of the 1-D ``flat`` (``1 <= k <= flat.numel()``), a 0-d tensor
    on its device, with no host synchronisation.

    :func:`torch.topk` of the smaller side, not :func:`torch.kthvalue`: on CUDA, ``kthvalue``
    runs one thread block per slice, so a whole layer of millions of scores is one block's radix
    select (tens of ms per call, pytorch/pytorch#75599); ``topk`` spreads a large slice over the
    device. On the CPU the two cost about the same. The value is the same either way.
    """
    n = flat.numel()
    if k <= n - k + 1:
        return torch.topk(flat, k, sorted=False).values.min()
    return torch.topk(flat, n - k + 1, largest=False, sorted=False).values.max()


def top_k_pending(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_k_mask` without reading anything back from the device, and without drawing.

    Parameters
    ----------
    scores : torch.Tensor
        Floating-point scores, any shape and device.
    k : int
        How many entries to keep, ``0 <= k <= scores.numel()``.

    Returns
    -------
    keep : torch.Tensor
        ``torch.bool`` like ``scores``: :func:`top_k_mask`'s result (which then uses no random
        draw) unless ``check`` says otherwise.
    check : torch.Tensor
        ``torch.bool`` of shape ``(2,)`` on the device: the scores hold a NaN (:func:`top_k_mask`
        raises), the entries tied at the threshold need a random draw (:func:`top_k_mask` draws
        it with its generator). When both are False, ``keep`` is final.
    """
    keep, _, _, stats = _top_k_parts(scores, k)
    return keep, stats[:2].bool()


def _top_k_parts(scores: torch.Tensor, k: int):
    """``(keep, above, kth, stats)`` on the device, no read: ``keep`` as :func:`top_k_pending`,
    ``above`` the entries above the k-th largest score ``kth``, ``stats`` int64
    ``[NaN seen, draw needed, entries still needed past above, entries tied at kth]``."""
    flat = scores.reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise MaskValidationError(f"cannot keep {k} of {n} entries")
    if k == n or k == 0:  # top_k_mask neither checks nor draws
        keep = torch.full_like(scores, k == n, dtype=torch.bool)
        return keep, None, None, torch.zeros(4, dtype=torch.int64, device=scores.device)
    kth = _kth_largest(flat, k)
    above = flat > kth
    at = flat == kth
    need = k - above.sum()  # >= 1 whenever the scores are NaN-free: the k-th itself is not above
    n_at = at.sum()
    keep = above | (at & (need == n_at))  # all the tied entries when all are needed
    draw = (need > 0) & (need < n_at)
    stats = torch.stack([torch.isnan(flat).any().long(), draw.long(), need, n_at])
    return keep.reshape(scores.shape), above, kth, stats


def top_k_mask(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool mask (same shape as ``scores``) of exactly ``k`` largest scores, ties broken at random.

    Parameters
    ----------
    scores : torch.Tensor
        Floating-point scores, any shape and device; ``-inf`` allowed, NaN not.
    k : int
        How many entries to keep, ``0 <= k <= scores.numel()``.
    generator : torch.Generator
        Draws the subset among scores equal to the k-th largest (only when there is a tie there
        and only some of the tied entries are kept).

    Returns
    -------
    torch.Tensor
        ``torch.bool``, on the device of ``scores``, with exactly ``k`` True entries.

    Notes
    -----
    One read from the device, and the tied entries' positions when they need the draw.
    """
    return top_k_mask_drawn(scores, k, generator)[0]


def top_k_mask_drawn(
    scores: torch.Tensor, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, bool]:
    """:func:`top_k_mask`, and whether it drew among tied entries.

    Parameters
    ----------
    scores, k, generator
        As :func:`top_k_mask`.

    Returns
    -------
    keep : torch.Tensor
        :func:`top_k_mask`'s mask (the same draws from ``generator``).
    drew : bool
        Whether only some of the entries tied at the k-th largest score were kept, so that the
        generator was used (a caller that re-runs many selections can tell whether they will
        use it again: :class:`masktopo.trainer.methods.dst.Regrowth`).
    """
    keep, above, kth, stats = _top_k_parts(scores, k)
    if k == 0 or k == scores.numel():
        return keep, False
    has_nan, draw, need, n_at = stats.tolist()  # one read: the draw's length is the data's
    if has_nan:
        raise MaskValidationError("pruning scores contain NaN (non-finite weights or overflow)")
    if not draw:
        return keep, False
    flat = scores.reshape(-1)
    tied = torch.nonzero(flat == kth).reshape(-1)  # n_at entries
    pick = torch.randperm(n_at, generator=generator, device=generator.device)
    keep = above.clone()
    keep[tied[pick[:need].to(tied.device)]] = True
    return keep.reshape(scores.shape), True


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
