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
gap         :class:`.gap.GaP`        scheduled grow-and-prune over partitions (C-GaP, P-GaP)
chita       :class:`.chita.Chita`    cubic prune events, each a multi-stage CHITA solve
==========  =======================  =========================================================

Adding a method: one file with a :class:`Sparsifier` subclass (its ``name``, ``summary`` and the
``defaults`` of the method-specific config fields it uses live with it) and one call of
:func:`register_method`.
"""

from __future__ import annotations

from ...errors import MaskValidationError, UnknownNameError
from .base import Record, Sparsifier
from .chita import Chita
from .dense import Dense
from .dst import DST, ITOP, SET, Regrowth, RigL
from .gap import GaP
from .gmp import GMP
from .granet import GraNet
from .static import Static

__all__ = [
    "DST",
    "GMP",
    "ITOP",
    "METHODS",
    "SET",
    "Chita",
    "Dense",
    "GaP",
    "GraNet",
    "Record",
    "Regrowth",
    "RigL",
    "Sparsifier",
    "Static",
    "make_sparsifier",
    "register_method",
]

#: Method name -> :class:`Sparsifier` subclass (:func:`register_method`).
METHODS: dict[str, type[Sparsifier]] = {}


def register_method(cls: type[Sparsifier]) -> type[Sparsifier]:
    """Register a :class:`Sparsifier` subclass under its ``name`` (usable as a decorator): then
    ``masktopo train --method NAME`` runs it, ``--list-methods`` lists it with its ``summary``,
    and :func:`masktopo.trainer.config.resolve` fills its ``defaults``."""
    from ..config import METHOD_FIELDS

    unknown = sorted(set(cls.defaults) - set(METHOD_FIELDS))
    if not cls.name or unknown:
        raise MaskValidationError(
            f"method class {cls.__name__}: needs a name, and defaults only for "
            f"{', '.join(METHOD_FIELDS)} (got {unknown})"
        )
    METHODS[cls.name] = cls
    return cls


for _cls in (Dense, Static, ITOP, SET, RigL, GMP, GraNet, GaP, Chita):
    register_method(_cls)


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
