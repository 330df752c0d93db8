"""Pruning at initialization (PaI): masks chosen before training, with exact kept counts.

Public API::

    masktopo.pai.prune(model, "snip", 0.05, batches=...)   # -> MaskSet with the model's weights
    masktopo.pai.scores(model, "grasp", batches=...)       # the raw scores prune ranks
    masktopo.pai.METHODS                                   # name -> method class (data_free, ...)
    masktopo.pai.perturb_weights(model, generator)          # PAGS's re-scoring noise
    masktopo.pai.erk_densities / er_densities / uniform_densities / layer_counts

Methods: random, erk, er, uniform, magnitude, snip, grasp, synflow, iter-snip, force. See
docs/pai.md for formulas, schedules, references and the choices made where papers are silent.
Submodules are imported lazily: :mod:`masktopo.pai.densities` needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from .densities import (  # noqa: F401
        DISTRIBUTIONS,
        er_densities,
        erk_densities,
        layer_counts,
        layer_densities,
        uniform_densities,
    )
    from .methods import METHODS, PaIMethod, get_method  # noqa: F401
    from .pruning import SCOPES, perturb_weights, prune, scores  # noqa: F401
    from .select import SCHEDULES  # noqa: F401

_LAZY = {
    "DISTRIBUTIONS": "densities",
    "er_densities": "densities",
    "erk_densities": "densities",
    "layer_counts": "densities",
    "layer_densities": "densities",
    "uniform_densities": "densities",
    "METHODS": "methods",
    "PaIMethod": "methods",
    "get_method": "methods",
    "SCOPES": "pruning",
    "perturb_weights": "pruning",
    "prune": "pruning",
    "scores": "pruning",
    "SCHEDULES": "select",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
