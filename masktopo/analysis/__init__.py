"""Pure functions from masks (and weights) to graph metrics: no I/O, no models, no global state.

- :mod:`~masktopo.analysis.graph`: layer mask → biadjacency (unrolled or rolled conv), isolated
  nodes stripped; export to networkx / python-igraph for exploration.
- :mod:`~masktopo.analysis.spectral`: top singular values, exact in float64, batched, CPU or CUDA.
- :mod:`~masktopo.analysis.metrics`: the registry of named layer metrics, :func:`layer_metrics`,
  :func:`analyze` (the layer table: a pandas DataFrame, one row per layer, no network row) and
  :func:`aggregate` (the network row; the fraction of Ramanujan layers is
  ``ramanujan_fraction``). Singular values below ``1e-12·σ₁`` are reported as 0 (``SV_FLOOR``).
- :mod:`~masktopo.analysis.runs`: :func:`analyze_run`, the metrics of every mask event of a run
  directory in one table (layer and network rows, told apart by ``level``; ``level="layer"`` or
  ``"network"`` for one of them), cached next to the run (the one module here that reads and
  writes files, through :mod:`masktopo.runs`).
- :func:`kernel_cache_is_cold`: whether the next spectral computation compiles the numba kernel
  first (its disk cache is cold); the command line's notice asks it. Importing it imports numba.

Names are imported lazily (on first use).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from ._kernels import kernel_cache_is_cold  # noqa: F401
    from .graph import (  # noqa: F401
        biadjacency,
        strip_isolated,
        to_igraph,
        to_networkx,
        weighted_biadjacency,
    )
    from .metrics import METRICS, Metric, aggregate, analyze, layer_metrics, metric_names  # noqa: F401
    from .runs import analyze_run  # noqa: F401
    from .spectral import top_singular_values  # noqa: F401

#: Public name -> submodule. Imported on first use, so that a worker process can import the
#: torch-free engine (:mod:`masktopo.analysis._engine`) without torch.
_LAZY = {
    "METRICS": "metrics",
    "Metric": "metrics",
    "aggregate": "metrics",
    "analyze": "metrics",
    "analyze_run": "runs",
    "biadjacency": "graph",
    "kernel_cache_is_cold": "_kernels",
    "layer_metrics": "metrics",
    "metric_names": "metrics",
    "strip_isolated": "graph",
    "to_igraph": "graph",
    "to_networkx": "graph",
    "top_singular_values": "spectral",
    "weighted_biadjacency": "graph",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
