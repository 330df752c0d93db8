"""PAGS: Pruning at Initialization as Graph Sampling (pags-spec §4; docs/pags.md).

Sample candidate masks around a PaI method (re-scoring it on fresh minibatches, or re-wiring at its
per-layer counts), score every candidate's layer graphs with N23's full-spectrum criteria in
batches, and keep the best, layer by layer or as a whole.

- :func:`score_candidates` — the batched scorer (:mod:`~masktopo.pags.scoring`);
- :func:`run_pags` — the loop from a base mask, a weight set θ and a candidate source
  (:mod:`~masktopo.pags.engine`), resumable and split across ``torchrun`` processes;
- :func:`run` — everything from names (model, dataset, method), as ``masktopo pags`` runs it
  (:mod:`~masktopo.pags.runner`);
- :class:`PagsConfig` — the run's parameters (:mod:`~masktopo.pags.config`).
"""

from .config import REFERENCES, SELECTIONS, PagsConfig
from .engine import PagsResult, accept, run_pags
from .runner import prepare, run
from .sampling import SAMPLERS, RescoreSource, RewireSource, generators, repair, rewire
from .scoring import INVALID, Scores, score_candidates

__all__ = [
    "INVALID",
    "REFERENCES",
    "SAMPLERS",
    "SELECTIONS",
    "PagsConfig",
    "PagsResult",
    "RescoreSource",
    "RewireSource",
    "Scores",
    "accept",
    "generators",
    "prepare",
    "repair",
    "rewire",
    "run",
    "run_pags",
    "score_candidates",
]
