"""Pure functions from masks (and weights) to graph metrics: no I/O, no models, no global state.

- :mod:`~masktopo.analysis.graph`: layer mask → biadjacency (unrolled or rolled conv), isolated
  nodes stripped; export to networkx / python-igraph for exploration.
- :mod:`~masktopo.analysis.spectral`: top singular values, exact in float64, batched, CPU or CUDA.
- :mod:`~masktopo.analysis.metrics`: the registry of named layer metrics, :func:`layer_metrics`,
  :func:`analyze` (a pandas DataFrame, one row per layer) and :func:`aggregate` (network level).
- :mod:`~masktopo.analysis.runs`: :func:`analyze_run`, the metrics of every mask event of a run
  directory in one table, cached next to the run (the one module here that reads and writes
  files, through :mod:`masktopo.store`).
"""

from .graph import biadjacency, strip_isolated, to_igraph, to_networkx, weighted_biadjacency
from .metrics import METRICS, Metric, aggregate, analyze, layer_metrics, metric_names
from .runs import analyze_run
from .spectral import top_singular_values

__all__ = [
    "METRICS",
    "Metric",
    "aggregate",
    "analyze",
    "analyze_run",
    "biadjacency",
    "layer_metrics",
    "metric_names",
    "strip_isolated",
    "to_igraph",
    "to_networkx",
    "top_singular_values",
    "weighted_biadjacency",
]
