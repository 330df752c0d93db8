"""Sparse training that records every mask: ``masktopo train`` from Python.

Public API::

    cfg = masktopo.trainer.TrainConfig(method="rigl", model="lenet300", density=0.02, epochs=3)
    result = masktopo.trainer.train(cfg, "runs/rigl")          # -> TrainResult
    masktopo.trainer.load_toml("configs/fmnist_set_lenet300.toml", seed=1)
    masktopo.trainer.resume_config("runs/rigl")                # the config to --resume with

Methods: dense, static, itop, set, rigl, gmp, granet, gap (docs/trainer.md). Submodules are imported
lazily, so ``import masktopo.trainer`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
