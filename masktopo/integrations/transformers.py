"""A Hugging Face ``transformers.Trainer`` callback that sparse-trains the model with a masktopo
method.

::

    from masktopo.integrations.transformers import MaskTopoCallback

    cb = MaskTopoCallback("rigl", out="runs/rigl", density=0.1, update_interval=100)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()

It drives :func:`masktopo.sparsify` on the trainer's model with the trainer's optimizer:

- ``on_train_begin`` creates the sparsifier, with ``total_steps = state.max_steps`` and
  ``steps_per_epoch = ceil(len(train_dataloader) / gradient_accumulation_steps)`` (as the
  trainer counts them; unless given). The optimizer exists by then (Accelerate's wrapper is
  looked through).
- ``on_optimizer_step`` calls ``sp.step()``: once per optimizer step, right after it and before
  ``model.zero_grad()``, so that RigL's gradient growth reads the step's dense gradients
  (``on_step_end`` comes after ``zero_grad``); a step the AMP scaler skips is not counted.
- ``on_train_end`` calls ``sp.finish(metrics=...)`` with the latest value of every number in
  ``state.log_history`` (``train_loss``, ``loss``, ``eval_*``, ...).

Only the main process writes ``out``; every process derives the same masks. The masks are the
model's ``<layer>.weight_mask`` buffers; GPT-2's ``Conv1D`` layers are masked, the embeddings and
a head tied to them stay dense. Resuming (``trainer.train(resume_from_checkpoint=...)``) is not
supported yet: it is refused with a one-line error.
"""

from __future__ import annotations

import math
import os
from typing import Any

try:
    import transformers
except ImportError as e:  # the optional extra
    raise ImportError(
        "masktopo.integrations.transformers needs transformers: pip install masktopo[transformers]"
    ) from e

from ..errors import MaskValidationError
from ..userloop import SparseTraining, sparsify
from . import _scalars, _sparsify_options

__all__ = ["MaskTopoCallback"]

_WHERE = "MaskTopoCallback"


class MaskTopoCallback(transformers.TrainerCallback):
    """Sparse-train a ``transformers.Trainer``'s model with a masktopo method
    (:func:`masktopo.sparsify`).

    Parameters
    ----------
    method : str
        Any ``masktopo train`` method: dense, static, itop, set, rigl, gmp, granet, ...
    out : path or None
        The run directory (new or empty). None records nothing.
    density : float, optional
        The kept fraction of the maskable weights (needed by every method but ``dense``).
    **options
        Any other keyword of :func:`masktopo.sparsify`: the method's options
        (:data:`masktopo.userloop.SPARSIFY_OPTIONS`: ``seed``, ``update_interval``, ...),
        ``layers``/``exclude``, ``batches``, ``example_inputs``, and ``total_steps`` /
        ``steps_per_epoch`` to override what the trainer says.

    Attributes
    ----------
    sparsifier : SparseTraining or None
        The running sparsifier (from ``on_train_begin`` on).

    Raises
    ------
    MaskValidationError
        An unknown option, a missing ``density``, a method option that is out of range or not
        used by the method (at construction); a resumed training (at ``on_train_begin``).
    """

    def __init__(
        self, method: str, out: str | os.PathLike | None, density: float | None = None, **options
    ) -> None:
        self.method = method
        self.out = out
        self.options = _sparsify_options(method, density, options, _WHERE)
        self.sparsifier: SparseTraining | None = None
        self._running = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        """Create the sparsifier on ``model`` and ``optimizer``."""
        if self._running:
            raise MaskValidationError(f"{_WHERE}: the sparsifier of an earlier train() is running")
        if state.global_step > 0:
            raise MaskValidationError(
                f"{_WHERE}: resuming a transformers Trainer run (from step {state.global_step}) "
                "is not supported; start the training from step 0 with a new out"
            )
        if model is None or optimizer is None:
            raise MaskValidationError(
                f"{_WHERE}: on_train_begin got no model or optimizer from the Trainer"
            )
        options = dict(self.options)
        total = options.pop("total_steps", None) or state.max_steps
        spe = options.pop("steps_per_epoch", None) or _steps_per_epoch(
            kwargs.get("train_dataloader"), args.gradient_accumulation_steps
        )
        self.sparsifier = sparsify(
            model,
            optimizer,
            method=self.method,
            total_steps=int(total),
            steps_per_epoch=spe,
            out=self.out if state.is_world_process_zero else None,
            **options,
        )
        self._running = True

    def on_optimizer_step(self, args, state, control, **kwargs) -> None:
        """``sp.step()``: masks and the method's update after the optimizer step."""
        if self._running:
            self.sparsifier.step()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        """``sp.finish()`` with the latest numbers of ``state.log_history``."""
        if not self._running:
            return
        self._running = False
        latest: dict[str, Any] = {}
        for entry in state.log_history:
            latest.update(entry)
        self.sparsifier.finish(metrics=_scalars(latest))


def _steps_per_epoch(loader, accumulation: int) -> int | None:
    """Optimizer steps per epoch as the Trainer counts them; None without a loader length."""
    try:
        n = len(loader)
    except TypeError:
        return None
    return max(1, math.ceil(n / max(1, accumulation))) if n > 0 else None
