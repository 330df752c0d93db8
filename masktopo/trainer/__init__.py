"""Sparse training that records every mask: ``masktopo train`` from Python.

Public API::

    cfg = masktopo.trainer.TrainConfig(method="rigl", model="lenet300", density=0.02, epochs=3)
    result = masktopo.trainer.train(cfg, "runs/rigl")          # -> TrainResult
    masktopo.trainer.load_toml("configs/fmnist_set_lenet300.toml", seed=1)
    masktopo.trainer.resume_config("runs/rigl")                # the config to --resume with

Methods: dense, static, itop, set, rigl, gmp, granet (docs/trainer.md). Submodules are imported
lazily, so ``import masktopo.trainer`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import METHODS, TrainConfig, load_toml, resolve  # noqa: F401
    from .loop import TrainingError, TrainResult, resume_config, train  # noqa: F401

_LAZY = {
    "METHODS": "config",
    "TrainConfig": "config",
    "load_toml": "config",
    "resolve": "config",
    "TrainResult": "loop",
    "TrainingError": "loop",
    "resume_config": "loop",
    "train": "loop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"masktopo.trainer.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'masktopo.trainer' has no attribute {name!r}")


def __dir__():
    return __all__
