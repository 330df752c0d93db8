"""The training methods, one file each, and their registry.

==========  =======================  =========================================================
name        class                    rule
==========  =======================  =========================================================
dense       :class:`.dense.Dense`    no mask
static      :class:`.static.Static`  a fixed PaI or file mask
itop        :class:`.dst.ITOP`       drop + regrow at constant counts, cosine rate, R_s
set         :class:`.dst.SET`        ITOP's core with random growth (SET in ITOP form)
rigl        :class:`.dst.RigL`       gradient growth, floor counts, stop at 75%, step skipped
gmp         :class:`.gmp.GMP`        cubic gradual magnitude pruning, global or per layer
granet      :class:`.granet.GraNet`  GMP plus neuroregeneration at every update
==========  =======================  =========================================================

Adding a method: one file with a :class:`Sparsifier` subclass, one line in :data:`METHODS`, its
defaults in :data:`masktopo.trainer.config.METHOD_DEFAULTS`.
"""

from __future__ import annotations

from ...errors import UnknownNameError
from .base import Record, Sparsifier
from .dense import Dense
from .dst import DST, ITOP, SET, Regrowth, RigL
from .gmp import GMP
from .granet import GraNet
from .static import Static

__all__ = [
    "DST",
    "GMP",
    "ITOP",
    "METHODS",
    "SET",
    "Dense",
    "GraNet",
    "Record",
    "Regrowth",
    "RigL",
    "Sparsifier",
    "Static",
    "make_sparsifier",
]

#: Method name -> :class:`Sparsifier` subclass (the names of ``config.METHODS``).
METHODS: dict[str, type[Sparsifier]] = {
    cls.name: cls for cls in (Dense, Static, ITOP, SET, RigL, GMP, GraNet)
}


def make_sparsifier(cfg, *, steps_per_epoch: int, total_steps: int, device) -> Sparsifier:
    """The method of ``cfg`` (resolved here when it is not yet), laid out over ``total_steps``.

    Raises
    ------
    UnknownNameError
        An unknown method (lists the known ones).
    MaskValidationError
        Bad step counts, or a schedule with no mask event in the run (e.g. ``update_interval``
        larger than the run, or a pruning window shorter than one interval).
    """
    from ..config import resolve

    cfg = resolve(cfg)
    cls = METHODS.get(cfg.method)
    if cls is None:
        raise UnknownNameError("method", cfg.method, METHODS)
    return cls(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps, device=device)
