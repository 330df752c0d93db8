"""Dense training: no mask at all (the baseline of the step-time benchmark)."""

from __future__ import annotations

from typing import ClassVar

from .base import Sparsifier

__all__ = ["Dense"]


class Dense(Sparsifier):
    """Trains every weight: :meth:`init_masks` returns no mask, so nothing is masked.

    An empty mask dict makes :class:`~masktopo.trainer.masking.Masking` a no-op (no buffers, no
    multiplications), so the dense run's step is the plain optimizer step.
    """

    name: ClassVar[str] = "dense"
    summary: ClassVar[str] = "every weight trained (baseline; density 1 unless given)"

    def init_masks(self, model, maskable, generator, *, batches=None):
        """No masks and no weights: ``({}, None)``."""
        return {}, None
