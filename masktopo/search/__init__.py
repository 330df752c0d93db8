"""Sparsest models: the combinatorial search and the pruning benchmark on the Cubist Spiral.

Zhang & Papyan (ICML 2024), methods-spec §7; docs/search.md. Public API::

    count_supports((2, 3, 3, 3, 1))            # 25992 (joint=True: modulo unit relabellings)
    supports(arch, joint=False)                # SupportKey(arch, index) in index order
    SupportKey.parse("2-3-3-3-1#12") .masks()  # a support rebuilt from its key
    support_masks(arch, indices)               # stacked masks [B, out, in] per matrix
    phase1_archs(16), block_masks(archs, 16)   # phase 1's dense sub-architectures
    EnsembleTrainer(x, y, w, b, masks, ...)    # B models at once as stacked tensors
    init_params(seeds, sizes, init_width=16)   # per-model initialisation, B-independent
    SearchConfig / run_search(config, out)     # the resumable search (masktopo search)
    read_results(out), read_search_masks(out)
    PruneBenchConfig / run_prune_bench(config, out)   # the pruning benchmark
    prune_to_k(...)                                    # one pruning method at exact nnz K

Submodules are imported on first use (the configs need no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from .config import PRUNE_METHODS, PruneBenchConfig, SearchConfig  # noqa: F401
    from .ensemble import (  # noqa: F401
        SCHEDULES,
        EnsembleTrainer,
        bias_masks_from_units,
        effective_counts,
        init_params,
        lr_table,
        train_one,
        unit_reachability,
    )
    from .enumerate import (  # noqa: F401
        SupportKey,
        block_masks,
        count_matrix_supports,
        count_supports,
        joint_indices,
        matrix_supports,
        parse_arch,
        phase1_archs,
        support_masks,
        supports,
    )
    from .prune import prune_to_k, run_prune_bench  # noqa: F401
    from .runner import read_results, read_search_masks, run_search, search_plan  # noqa: F401

_LAZY = {
    "PRUNE_METHODS": "config",
    "PruneBenchConfig": "config",
    "SearchConfig": "config",
    "SCHEDULES": "ensemble",
    "EnsembleTrainer": "ensemble",
    "bias_masks_from_units": "ensemble",
    "effective_counts": "ensemble",
    "init_params": "ensemble",
    "lr_table": "ensemble",
    "train_one": "ensemble",
    "unit_reachability": "ensemble",
    "SupportKey": "enumerate",
    "block_masks": "enumerate",
    "count_matrix_supports": "enumerate",
    "count_supports": "enumerate",
    "joint_indices": "enumerate",
    "matrix_supports": "enumerate",
    "parse_arch": "enumerate",
    "phase1_archs": "enumerate",
    "support_masks": "enumerate",
    "supports": "enumerate",
    "prune_to_k": "prune",
    "run_prune_bench": "prune",
    "read_results": "runner",
    "read_search_masks": "runner",
    "run_search": "runner",
    "search_plan": "runner",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
