"""PAGS: Pruning at Initialization as Graph Sampling (pags-spec §4; docs/pags.md).

Sample candidate masks around a PaI method (re-scoring it on fresh minibatches, or re-wiring at its
per-layer counts), score every candidate's layer graphs with N23's full-spectrum criteria in
batches, and keep the best, layer by layer or as a whole.

- :func:`score_candidates` — the batched scorer, and :func:`rank_candidates`, its ranking pass
  (rigorous bounds from a few Lanczos steps; :mod:`~masktopo.pags.scoring`);
- :func:`run_pags` — the loop from a base mask, a weight set θ and a candidate source
  (:mod:`~masktopo.pags.engine`), resumable and split across ``torchrun`` processes;
- :func:`run` — everything from names (model, dataset, method), as ``masktopo pags`` runs it
  (:mod:`~masktopo.pags.runner`);
- :class:`PagsConfig` — the run's parameters (:mod:`~masktopo.pags.config`).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from .config import INVALID, REFERENCES, SAMPLERS, SELECTIONS, PagsConfig  # noqa: F401
    from .engine import PagsResult, accept, run_pags  # noqa: F401
    from .runner import prepare, run  # noqa: F401
    from .sampling import Drawn, RescoreSource, RewireSource, generators, repair, rewire  # noqa: F401
    from .scoring import Ranking, Scores, rank_candidates, score_candidates  # noqa: F401

#: Public name -> submodule, imported on first use (``masktopo pags --help`` reads the config
#: without torch).
_LAZY = {
    "INVALID": "config",
    "REFERENCES": "config",
    "SAMPLERS": "config",
    "SELECTIONS": "config",
    "PagsConfig": "config",
    "PagsResult": "engine",
    "accept": "engine",
    "run_pags": "engine",
    "prepare": "runner",
    "run": "runner",
    "Drawn": "sampling",
    "RescoreSource": "sampling",
    "RewireSource": "sampling",
    "generators": "sampling",
    "repair": "sampling",
    "rewire": "sampling",
    "Ranking": "scoring",
    "Scores": "scoring",
    "rank_candidates": "scoring",
    "score_candidates": "scoring",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
