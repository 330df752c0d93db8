"""The one sparse-training core that ``masktopo train`` and :func:`masktopo.sparsify` drive.

A :class:`SparseSession` holds a method (a :class:`~masktopo.trainer.methods.Sparsifier`), its
masks on the model (:class:`~masktopo.trainer.masking.Masking`) and the run's event writer. Per
optimizer iteration ``step`` (0-based) the driver does::

    if not session.skip_step(step):
        optimizer.step()
    session.after_step(step, optimizer)   # mask weights + optimizer state, then the method's update

and every mask change is recorded as one event by :meth:`SparseSession.record`. The two front
doors differ only in who owns the loop: :func:`masktopo.trainer.train` has its own (data, epochs,
evaluation, checkpoints, DDP); :class:`masktopo.userloop.SparseTraining` sits in the user's loop.
Neither has a second copy of the masking or the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import MaskValidationError
from ..runs import RunWriter
from .config import TrainConfig, resolve
from .masking import Masking
from .methods import Sparsifier, make_sparsifier

__all__ = ["DivergedError", "SparseSession", "mask_checksum", "masks_agree"]


def mask_checksum(masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per layer (nnz, sum of kept flat indices mod a prime), float64 on the masks' device:
    equal masks give equal sums."""
    out = []
    for m in masks.values():
        idx = torch.nonzero(m.reshape(-1)).reshape(-1).to(torch.float64)
        out.append(torch.stack([torch.tensor(float(idx.numel()), dtype=torch.float64,
                                             device=idx.device),
                                torch.remainder(idx * 2654435761.0, 1_000_003.0).sum()]))  # fmt: skip
    if not out:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(out)


def masks_agree(masks: Mapping[str, torch.Tensor]) -> bool:
    """True when ``masks`` are the same on every rank of the default process group (always
    True without one): one all-gather of :func:`mask_checksum`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    value = mask_checksum(masks)
    if dist.get_backend() == "nccl" and value.device.type != "cuda":
        value = value.to("cuda", torch.cuda.current_device())
    gathered = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, value)
    return all(torch.equal(g, gathered[0]) for g in gathered)


class DivergedError(MaskValidationError):
    """The weights became NaN or infinite before a mask update (the update's scores are NaN)."""


class SparseSession:
    """A method's masks on a model: start masks, post-step masking, updates, recorded events.

    Parameters
    ----------
    cfg : TrainConfig
        The method and its options (resolved here); ``density``, ``seed``, ``mask_adam`` and
        ``dump_weights`` are read too.
    model : torch.nn.Module
        The unwrapped model.
    maskable : Mapping[str, torch.nn.Parameter]
        The parameters the method masks (names as in ``model.named_parameters()``).
    steps_per_epoch, total_steps : int
        The schedules' layout (optimizer iterations).
    device : torch.device or str
        Where the parameters live.
    writer : RunWriter, optional
        The run's event writer; None records nothing (events are still counted).

    Attributes
    ----------
    sparsifier : Sparsifier
        The method.
    masking : Masking or None
        The attached masks (None for dense training or before :meth:`attach`).
    steps_done : int
        Iterations completed, as the events report them.
    extra_scalars : callable
        ``() -> dict`` of scalars added to every event (the loop's latest epoch metrics).
    on_event : callable or None
        ``(kind, masks)`` before an event is written (the distributed masks check).
    after_event : callable or None
        ``(k)`` after event ``k`` is queued (test hooks).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        maskable: Mapping[str, nn.Parameter],
        *,
        steps_per_epoch: int,
        total_steps: int,
        device,
        writer: RunWriter | None = None,
    ):
        self.cfg = resolve(cfg)
        self.model = model
        self.maskable = dict(maskable)
        self.layer_names = list(self.maskable)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.sparsifier: Sparsifier = make_sparsifier(
            self.cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps, device=device
        )
        self.sparsifier.bind(model, self.maskable)
        self.masking: Masking | None = None
        self.writer = writer if writer is not None else RunWriter(None)
        self.steps_done = 0
        self.extra_scalars: Callable[[], dict] = dict
        self.on_event: Callable[[str, dict], None] | None = None
        self.after_event: Callable[[int], None] | None = None

    # -- masks ------------------------------------------------------------------------------------
    def start_masks(
        self, generator: torch.Generator, *, batches=None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """The method's start masks and weights (:meth:`Sparsifier.init_masks`)."""
        masks, weights = self.sparsifier.init_masks(
            self.model, self.maskable, generator, batches=batches
        )
        if masks and set(masks) != set(self.layer_names):
            raise MaskValidationError(
                f"the {self.cfg.method} start masks cover {sorted(masks)}, the maskable layers "
                f"are {self.layer_names}"
            )
        return masks, weights

    @torch.no_grad()
    def start(self, generator: torch.Generator, *, batches=None) -> None:
        """A fresh start: draw the start masks, load the method's weights, attach the masks."""
        masks, weights = self.start_masks(generator, batches=batches)
        for name, w in (weights or {}).items():
            self.maskable[name].copy_(w.to(self.maskable[name].dtype))
        self.attach(masks)

    def attach(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Attach ``masks`` as the model's mask buffers (nothing for an empty dict: dense)."""
        self.masking = Masking(self.model, masks, mask_adam=self.cfg.mask_adam) if masks else None

    def current_masks(self) -> dict[str, torch.Tensor]:
        """Layer -> the live mask (all-True tensors when nothing is masked)."""
        if self.masking is not None:
            live = self.masking.masks
            return {n: live[n] for n in self.layer_names}
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.maskable.items()}

    def density(self) -> float:
        """Kept fraction of the maskable weights (1.0 when dense)."""
        return 1.0 if self.masking is None else self.masking.density()

    def nnz(self) -> dict[str, int]:
        """Kept entries per layer."""
        if self.masking is None:
            return {n: p.numel() for n, p in self.maskable.items()}
        return self.masking.nnz()

    # -- the step ---------------------------------------------------------------------------------
    def skip_step(self, step: int) -> bool:
        """Whether iteration ``step`` skips ``optimizer.step()`` (RigL's update steps)."""
        return self.sparsifier.skip_step(step)

    def after_step(self, step: int, optimizer) -> None:
        """After iteration ``step``'s optimizer step (or its skip): mask, then the method's update.

        Raises
        ------
        DivergedError
            The weights are NaN or infinite when the update needs their scores.
        """
        if self.masking is not None:
            self.masking.apply(optimizer)
        self.steps_done = step + 1
        try:
            self.sparsifier.update(step, self.masking, optimizer, self.record)
        except MaskValidationError:
            bad = [n for n, p in self.maskable.items() if not bool(torch.isfinite(p).all())]
            if bad:
                raise DivergedError(
                    f"weights became NaN or infinite before the mask update at step {step + 1} "
                    f"(layer {bad[0]!r})"
                ) from None
            raise

    # -- events -----------------------------------------------------------------------------------
    def record(self, kind: str, *, masks=None, weights=None, **scalars) -> int:
        """Record the current masks as event ``kind`` (weights per ``dump_weights``); its index.

        ``masks`` and ``weights`` (layer -> tensor) record given values instead of the live ones
        (P-GaP records a replica's start from its snapshot of the combined model).
        """
        dump = self.cfg.dump_weights
        with_weights = dump == "all" or (dump == "ends" and kind in ("init", "final"))
        if masks is None:
            masks = self.current_masks()
        if self.on_event is not None:
            self.on_event(kind, masks)
        if not with_weights:
            weights = None
        elif weights is None:
            weights = {n: self.maskable[n] for n in self.layer_names}
        s = self.steps_done
        k = self.writer.record(
            masks,
            weights,
            kind=kind,
            step=s,
            epoch=s / self.steps_per_epoch,
            scalars={**self.extra_scalars(), **self.sparsifier.scalars(), **scalars},
        )
        if self.after_event is not None:
            self.after_event(k)
        return k

    def scalars(self) -> dict[str, Any]:
        """The method's current scalars (R_s, rate, target density, ...)."""
        return self.sparsifier.scalars()
