"""One-shot and multi-stage pruning of trained networks: CHITA and its baselines.

Benbaki et al., *Fast as CHITA: Neural Network Pruning with Combinatorial Optimization*, ICML
2023 (methods-spec §5; docs/prune.md).

- :mod:`~masktopo.prune.gradients`: the ``n x p`` gradient matrix ``G`` (``torch.func`` vmap of
  grad, in chunks, float32/float64 on the device) and its memory check;
- :mod:`~masktopo.prune.solvers`: the problem ``min ½‖y − Gw‖² + λ₂‖w − w̄‖² + αᵀw, ‖w‖₀ ≤ k``
  and its solvers (``mp``, ``bso``, ``bso-block``, ``iht``, ``chita``), one interface;
- :mod:`~masktopo.prune.bn`: BatchNorm statistics re-estimated after pruning;
- :mod:`~masktopo.prune.config`: :class:`PruneConfig` (the ``masktopo prune`` options);
- :mod:`~masktopo.prune.runner`: :func:`prune` (every method x sparsity, CHITA++ stages) into a
  run directory of kind ``"prune"``.

The gradual CHITA of the trainer (``masktopo train --method chita``) is
:class:`masktopo.trainer.methods.chita.Chita`, over these pieces.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from .bn import has_batchnorm, reestimate_bn  # noqa: F401
    from .config import METHODS, SCHEDULES, PruneConfig  # noqa: F401
    from .gradients import check_memory, gradient_matrix, gradient_matrix_loop  # noqa: F401
    from .runner import (  # noqa: F401
        RESULTS_FILE,
        PruneResult,
        Source,
        load_source,
        prune,
        stage_sparsities,
    )
    from .solvers import SOLVERS, Problem, Solution, SolverOptions, get_solver, solve  # noqa: F401

#: Public name -> submodule, imported on first use (``masktopo prune --help`` reads the config
#: without torch).
_LAZY = {
    "has_batchnorm": "bn",
    "reestimate_bn": "bn",
    "METHODS": "config",
    "SCHEDULES": "config",
    "PruneConfig": "config",
    "check_memory": "gradients",
    "gradient_matrix": "gradients",
    "gradient_matrix_loop": "gradients",
    "RESULTS_FILE": "runner",
    "PruneResult": "runner",
    "Source": "runner",
    "load_source": "runner",
    "prune": "runner",
    "stage_sparsities": "runner",
    "SOLVERS": "solvers",
    "Problem": "solvers",
    "Solution": "solvers",
    "SolverOptions": "solvers",
    "get_solver": "solvers",
    "solve": "solvers",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
