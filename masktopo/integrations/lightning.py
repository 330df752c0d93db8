"""A Lightning callback that sparse-trains the ``LightningModule`` with a masktopo method.

::

    from masktopo.integrations.lightning import MaskTopoCallback

    cb = MaskTopoCallback("rigl", out="runs/rigl", density=0.1, update_interval=100)
    trainer = lightning.Trainer(max_steps=10_000, callbacks=[cb])
    trainer.fit(module, loader)
    # later, after a crash: the same callback settings, the same ``out``
    trainer.fit(module, loader, ckpt_path="checkpoints/last.ckpt")

It drives :func:`masktopo.sparsify` on the module with the trainer's optimizer:

- ``on_train_start`` creates the sparsifier (fresh, or resumed from the checkpoint's callback
  state), with ``total_steps = trainer.estimated_stepping_batches`` and ``steps_per_epoch =
  ceil(num_training_batches / accumulate_grad_batches)`` (unless given). Then every optimizer
  and learning-rate scheduler state is in place: the optimizers exist from ``strategy.setup``
  on, and a checkpoint's optimizer state is loaded after ``on_fit_start``.
- ``on_train_batch_end`` calls ``sp.step()``: once per optimizer step (micro-batches of gradient
  accumulation and steps the AMP scaler skips are not counted), after the optimizer step and
  before the next ``zero_grad``, so RigL reads the step's dense gradients.
- ``on_train_end`` calls ``sp.finish(metrics=...)`` with the scalars of
  ``trainer.callback_metrics``; ``on_exception`` stops without the final event and releases the
  run directory, which stays resumable.
- ``state_dict`` carries ``sp.state_dict()`` into Lightning's checkpoints.

Resume (``trainer.fit(..., ckpt_path=...)``): Lightning loads the module's state strictly, before
any callback hook sees the checkpoint, and the checkpoint holds the mask buffers
(``<layer>.weight_mask``). So ``setup`` hooks the module's ``on_load_checkpoint`` (which runs just
before the state is loaded, after ``configure_model``) to add those buffers, with the saved masks,
when the checkpoint has this callback's state; the hook is removed at ``teardown``. The run in
``out`` then continues from the checkpoint's step: later events are dropped and recorded again.

Only global rank 0 writes ``out``; every rank derives the same masks.
"""

from __future__ import annotations

import math
import os
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as e:  # the optional extra
    raise ImportError(
        "masktopo.integrations.lightning needs Lightning: pip install masktopo[lightning]"
    ) from e

from ..errors import MaskValidationError
from ..maskable import unwrap_model
from ..userloop import SparseTraining, sparsify
from . import _scalars, _sparsify_options

__all__ = ["MaskTopoCallback"]

_WHERE = "MaskTopoCallback"


class MaskTopoCallback(pl.Callback):
    """Sparse-train the ``LightningModule`` with a masktopo method (:func:`masktopo.sparsify`).

    Parameters
    ----------
    method : str
        Any ``masktopo train`` method: dense, static, itop, set, rigl, gmp, granet, ...
    out : path or None
        The run directory (new or empty; on a resume from a checkpoint, the run to continue).
        None records nothing.
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
        The running sparsifier (from ``on_train_start`` on).

    Raises
    ------
    MaskValidationError
        An unknown option, a missing ``density``, a method option that is out of range or not
        used by the method (at construction); a module with several optimizers or a run without
        an end (at ``on_train_start``).
    """

    def __init__(
        self, method: str, out: str | os.PathLike | None, density: float | None = None, **options
    ) -> None:
        super().__init__()
        self.method = method
        self.out = out
        self.options = _sparsify_options(method, density, options, _WHERE)
        self.sparsifier: SparseTraining | None = None
        self._running = False
        self._completed = False  # finish() ran: the run directory is complete
        self._saved: dict[str, Any] | None = None
        self._saved_finished = False
        self._hooked: tuple[pl.LightningModule, Any] | None = None

    # -- resume: the mask buffers before Lightning loads the module's state ----------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Hook the module's ``on_load_checkpoint`` to add the checkpoint's mask buffers."""
        if stage != "fit" or self._hooked is not None:
            return
        own = pl_module.__dict__.get("on_load_checkpoint")
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            original(checkpoint)
            self._add_mask_buffers(pl_module, checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint  # type: ignore[method-assign]
        self._hooked = (pl_module, own)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the ``on_load_checkpoint`` hook of :meth:`setup`."""
        if stage == "fit":
            self._unhook()

    def _unhook(self) -> None:
        if self._hooked is None:
            return
        module, own = self._hooked
        self._hooked = None
        if own is None:
            module.__dict__.pop("on_load_checkpoint", None)
        else:
            module.on_load_checkpoint = own  # type: ignore[method-assign]

    def _add_mask_buffers(self, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        saved = state.get("sparsify") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or saved.get("dense") or not saved.get("masks"):
            return  # no state of this callback, or dense training: no mask buffers
        from ..trainer.masking import Masking

        # registers ``<attr>_mask`` buffers holding the saved masks (existing ones are reused),
        # excluded from DDP's buffer broadcast; the module's state is loaded right after
        Masking(unwrap_model(pl_module), saved["masks"])

    # -- the run ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Create the sparsifier (resumed when the checkpoint carried its state)."""
        if self._running:
            raise MaskValidationError(f"{_WHERE}: the sparsifier of an earlier fit is running")
        options = dict(self.options)
        total = options.pop("total_steps", None) or trainer.estimated_stepping_batches
        if not isinstance(total, int) and not (isinstance(total, float) and math.isfinite(total)):
            raise MaskValidationError(
                f"{_WHERE}: the training has no end (max_steps=-1 and max_epochs=-1); set "
                "max_steps or max_epochs, or pass total_steps="
            )
        spe = options.pop("steps_per_epoch", None) or _steps_per_epoch(trainer)
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise MaskValidationError(
                f"{_WHERE}: the module has {len(optimizers)} optimizers; it takes one that "
                "holds the maskable weights"
            )
        saved, finished = self._saved, self._saved_finished
        self._saved = None
        if saved is not None and finished:
            raise MaskValidationError(
                f"{_WHERE}: the checkpoint was saved after the run in {self.out} was finished; "
                "resume from a checkpoint saved during training, or start a new run (another out)"
            )
        sp = sparsify(
            pl_module,
            optimizers[0],
            method=self.method,
            total_steps=int(total),
            steps_per_epoch=spe,
            out=self.out if trainer.is_global_zero else None,
            resume=saved is not None,
            **options,
        )
        if saved is not None:
            sp.load_state_dict(saved)
        self.sparsifier, self._running, self._completed = sp, True, False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """``sp.step()``: masks and the method's update after an optimizer step."""
        if self._running:
            self.sparsifier.step()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``sp.finish()`` with the scalars of ``trainer.callback_metrics``."""
        if self._running:
            self._running, self._completed = False, True
            self.sparsifier.finish(metrics=_scalars(trainer.callback_metrics))

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Stop without the final event; the run directory stays resumable."""
        self._unhook()  # Lightning calls no teardown hook after an exception
        if self._running:
            self._running = False
            self.sparsifier.close()  # no final event: the run stays resumable

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"sparsify": sp.state_dict(), "finished": bool}`` once training started (what a
        resumed run needs), else ``{}``."""
        if self.sparsifier is None:
            if self._saved is None:
                return {}
            return {"sparsify": self._saved, "finished": self._saved_finished}
        return {"sparsify": self.sparsifier.state_dict(), "finished": self._completed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's sparsifier state for ``on_train_start``."""
        saved = state_dict.get("sparsify")
        self._saved = saved if isinstance(saved, dict) else None
        self._saved_finished = bool(state_dict.get("finished"))


def _steps_per_epoch(trainer: pl.Trainer) -> int | None:
    """Optimizer steps per epoch: Lightning steps at the end of an epoch's last, partial
    accumulation window too; None when the loader has no length."""
    n = trainer.num_training_batches
    if not isinstance(n, int) or n < 1:
        return None
    return max(1, math.ceil(n / trainer.accumulate_grad_batches))
