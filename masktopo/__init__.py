"""masktopo: the topology of sparse neural networks.

Public API (stable)::

    masktopo.MaskSet                       # ordered name -> bool mask, kinds, shapes, optional weights
    masktopo.load(path, ...)               # any supported mask file or run directory -> MaskSet
    masktopo.save(path, maskset)           # safetensors (default), .npz or prune-style .pt; atomic
    masktopo.analysis.analyze(maskset)     # pandas DataFrame of graph metrics, one row per layer
    masktopo.analysis.layer_metrics(mask)  # dict of metrics for one layer

Submodules are imported lazily, so ``import masktopo`` is cheap and the command line's ``--help``
never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from . import analysis, examples, store  # noqa: F401
    from .errors import (  # noqa: F401
        MaskFileError,
        MaskTopoError,
        MaskValidationError,
        UnknownNameError,
    )
    from .masks import LayerInfo, MaskSet  # noqa: F401
    from .store import info, load, save  # noqa: F401

_LAZY = {
    "MaskSet": ("masktopo.masks", "MaskSet"),
    "LayerInfo": ("masktopo.masks", "LayerInfo"),
    "load": ("masktopo.store", "load"),
    "save": ("masktopo.store", "save"),
    "info": ("masktopo.store", "info"),
    "MaskTopoError": ("masktopo.errors", "MaskTopoError"),
    "MaskFileError": ("masktopo.errors", "MaskFileError"),
    "MaskValidationError": ("masktopo.errors", "MaskValidationError"),
    "UnknownNameError": ("masktopo.errors", "UnknownNameError"),
}
_SUBMODULES = {"analysis", "store", "masks", "errors", "examples", "zoo", "pai", "pags", "trainer"}

__all__ = ["__version__", *sorted(_LAZY), *sorted(_SUBMODULES)]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"masktopo.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'masktopo' has no attribute {name!r}")


def __dir__():
    return __all__
