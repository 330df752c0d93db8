"""masktopo: the topology of sparse neural networks.

Public API (stable)::

    masktopo.MaskSet                       # ordered name -> bool mask, kinds, shapes, optional weights
    masktopo.load(path, ...)               # any supported mask file or run directory -> MaskSet
    masktopo.save(path, maskset)           # safetensors (default), .npz or prune-style .pt; atomic
    masktopo.info(path)                    # layers, shapes, densities of a file or run
    masktopo.sparsify(model, opt, method=..., density=..., total_steps=T, out=...)
                                           # any masktopo method in your own loop (sp.step())
    masktopo.record(model, out, every=500) # record the masks another library makes
    masktopo.runs.read_run(path)           # a run directory: its config, events, mask files
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
    from . import analysis, examples, runs, store  # noqa: F401
    from .errors import (  # noqa: F401
        MaskFileError,
        MaskTopoError,
        MaskValidationError,
        UnknownNameError,
    )
    from .inputs import info, load  # noqa: F401
    from .masks import LayerInfo, MaskSet  # noqa: F401
    from .store import save  # noqa: F401
    from .userloop import record, sparsify  # noqa: F401

_LAZY = {
    "MaskSet": ("masktopo.masks", "MaskSet"),
    "LayerInfo": ("masktopo.masks", "LayerInfo"),
    "load": ("masktopo.inputs", "load"),
    "save": ("masktopo.store", "save"),
    "info": ("masktopo.inputs", "info"),
    "sparsify": ("masktopo.userloop", "sparsify"),
    "record": ("masktopo.userloop", "record"),
    "MaskTopoError": ("masktopo.errors", "MaskTopoError"),
    "MaskFileError": ("masktopo.errors", "MaskFileError"),
    "MaskValidationError": ("masktopo.errors", "MaskValidationError"),
    "UnknownNameError": ("masktopo.errors", "UnknownNameError"),
}
_SUBMODULES = {
    "analysis",
    "errors",
    "examples",
    "files",
    "inputs",
    "integrations",
    "maskable",
    "masks",
    "pags",
    "pai",
    "runs",
    "seeding",
    "store",
    "trainer",
    "userloop",
    "zoo",
}

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
