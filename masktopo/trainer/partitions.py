"""Partitions of the maskable layers for GaP: a count split by depth, or a name-pattern map.

Ma et al., *Effective model sparsification by scheduled grow-and-prune methods*, ICLR 2022
(methods-spec §4): the maskable layers are split into :math:`\\kappa` partitions; each is grown
(trained dense) and pruned back in turn. The reference defines partitions only implicitly (the
layer lists of hand-written step configs); here they are either

- ``K`` contiguous groups of the layers in model order, balanced by parameter count (the paper's
  by-depth split): the split that minimises the largest group (exact, by dynamic programming),
  ties broken towards earlier boundaries; or
- a declarative map ``{name pattern -> partition id}`` (``fnmatch`` globs): every maskable layer
  must match exactly one pattern, and the ids must be ``0 .. K-1``, each used.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from ..checks import is_int
from ..errors import MaskValidationError

__all__ = ["balanced_split", "partition_layers"]


def balanced_split(sizes: Sequence[int], k: int) -> list[int]:
    """Partition ids of ``len(sizes)`` items in order, ``k`` contiguous non-empty groups, with
    the largest group sum as small as possible.

    >>> balanced_split([4, 1, 1, 1, 1], 2)
    [0, 1, 1, 1, 1]
    >>> balanced_split([1, 1, 1, 1], 2)
    [0, 0, 1, 1]
    """
    n = len(sizes)
    if not is_int(k) or k < 1:
        raise MaskValidationError(f"partitions must be a positive integer, got {k!r}")
    if k > n:
        raise MaskValidationError(f"partitions {k} is more than the {n} maskable layers")
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + int(s))
    inf = float("inf")
    # best[j][i]: smallest max-group sum splitting the first i items into j groups
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for c in range(j - 1, i):  # the last group is items c .. i-1
                v = max(best[j - 1][c], prefix[i] - prefix[c])
                if v < best[j][i]:
                    best[j][i], cut[j][i] = v, c
    ids = [0] * n
    i = n
    for j in range(k, 0, -1):
        c = cut[j][i]
        for t in range(c, i):
            ids[t] = j - 1
        i = c
    return ids


def partition_layers(
    layers: Mapping[str, int], partitions: int | None, partition_map: Mapping[str, int] | None
) -> dict[str, int]:
    """The resolved layer -> partition map (run.json records it).

    Parameters
    ----------
    layers : Mapping[str, int]
        Maskable layer name -> parameter count, in model order.
    partitions : int or None
        ``K``: the balanced by-depth split.
    partition_map : Mapping[str, int] or None
        ``{pattern: id}``; exactly one of the two is given.

    Raises
    ------
    MaskValidationError
        Both or neither given; an unmatched layer, a layer matched by two patterns, a pattern
        that matches nothing, ids that are not ``0 .. K-1`` each used; more partitions than
        layers. One line each, naming the layers.
    """
    if (partitions is None) == (partition_map is None):
        raise MaskValidationError("gap: give partitions (a count) or partition_map, not both")
    names = list(layers)
    if partition_map is None:
        return dict(zip(names, balanced_split([layers[n] for n in names], partitions), strict=True))
    out: dict[str, int] = {}
    unmatched, double = [], []
    used_patterns: set[str] = set()
    for n in names:
        hits = [p for p in partition_map if fnmatch.fnmatchcase(n, p)]
        used_patterns.update(hits)
        ids = {partition_map[p] for p in hits}
        if not hits:
            unmatched.append(n)
        elif len(ids) > 1:
            double.append(f"{n} ({', '.join(hits)})")
        else:
            out[n] = int(partition_map[hits[0]])
    if unmatched:
        raise MaskValidationError(
            f"gap partition_map: no pattern matches layer(s) {', '.join(unmatched)}"
        )
    if double:
        raise MaskValidationError(
            f"gap partition_map: layer(s) matched by patterns of different partitions: "
            f"{'; '.join(double)}"
        )
    idle = [p for p in partition_map if p not in used_patterns]
    if idle:
        raise MaskValidationError(f"gap partition_map: pattern(s) {', '.join(idle)} match no "
                                  "maskable layer")  # fmt: skip
    ids = sorted(set(out.values()))
    if ids != list(range(len(ids))):
        raise MaskValidationError(
            f"gap partition_map: partition ids must be 0 .. K-1, each used; got {ids}"
        )
    return out
