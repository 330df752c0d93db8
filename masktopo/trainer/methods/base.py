"""The :class:`Sparsifier` interface every training method implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ...checks import is_int
from ...errors import MaskValidationError
from ...seeding import generator as seeded_generator
from ..masking import Masking

__all__ = ["Record", "Sparsifier"]

#: ``record(kind, **scalars)``: the loop's callback for a mask change (kind "update", "prune",
#: "regen"; JSON-able scalars such as ``rate``, ``R_s``, ``drop``, ``grow``, ``target_density``).
Record = Callable[..., None]


class Sparsifier:
    """Base class of the training methods: start masks, then mask changes during training.

    The loop builds one with :func:`~masktopo.trainer.methods.make_sparsifier`, calls
    :meth:`init_masks` once at the start of a fresh run (never on resume: the masks come back
    with the model's buffers and :meth:`load_state_dict`), then at every iteration ``step``
    (0-based): ``if not skip_step(step): optimizer.step()``; ``masking.apply(optimizer)``;
    ``update(step, masking, optimizer, record)``. :meth:`update` must be called at *every*
    iteration: the method decides when its mask changes, and a few methods track per-step state
    (momentum growth's dense momentum).

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration (its method-specific fields are read by the subclasses).
    steps_per_epoch, total_steps : int
        Iterations per epoch and in the whole run (``epochs * steps_per_epoch``); schedules are
        laid out over ``total_steps`` whatever ``max_steps`` says.
    device : torch.device or str
        Where the parameters live; the method's generator and tensors live there too.

    Attributes
    ----------
    generator : torch.Generator
        The method's own random stream (ties, random growth), on ``device``, seeded from
        ``cfg.seed`` and the purpose ``"updates"`` (:func:`masktopo.seeding.generator`), so
        it is independent of the generator that draws the start masks.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: The method's values of the method-specific config fields it uses
    #: (:data:`masktopo.trainer.config.METHOD_FIELDS`): a field missing here is not used by the
    #: method and must stay unset. :func:`masktopo.trainer.config.resolve` fills the unset ones.
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def resolve(cls, cfg) -> dict[str, Any]:
        """Config changes the method makes once its defaults are filled (e.g. GaP derives
        ``epochs`` from its schedule); checks across the method's fields. Default: none."""
        return {}

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        for key, value in (("steps_per_epoch", steps_per_epoch), ("total_steps", total_steps)):
            if not is_int(value) or value < 1:
                raise MaskValidationError(f"{key} must be a positive integer, got {value!r}")
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.device = torch.device(device)
        self.generator = seeded_generator(cfg.seed, "updates", device=self.device)

    # -- interface --------------------------------------------------------------------------------
    def init_masks(
        self,
        model: nn.Module,
        maskable: Mapping[str, nn.Parameter],
        generator: torch.Generator,
        *,
        batches: Iterable | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """The start masks (bool, on the parameters' device), and weights to load or None.

        Parameters
        ----------
        model : torch.nn.Module
            The unwrapped model at its initialization.
        maskable : Mapping[str, torch.nn.Parameter]
            The parameters to mask (``masktopo.zoo.maskable_parameters(model, first_dense=...,
            last_dense=...)``); the returned dicts have exactly these names.
        generator : torch.Generator
            The run's mask-initialization stream.
        batches : iterable of (inputs, targets), optional
            Minibatches for data-driven PaI methods (``static`` with SNIP, GraSP, ...).
        """
        raise NotImplementedError

    @classmethod
    def check_data(cls, cfg, train_samples: int) -> None:
        """Raise :class:`~masktopo.errors.MaskValidationError` when ``cfg`` cannot run on a
        training split of ``train_samples`` samples (checked before training starts, and by
        ``masktopo sweep`` for each cell). Default: nothing to check."""

    # -- hooks for methods that are more than a mask schedule (GaP); defaults: a plain method --
    @classmethod
    def independent_ranks(cls, cfg) -> bool:
        """True when, under torchrun, each process trains its own replica on whole batches (no
        DDP; P-GaP) instead of a share of one model's batch."""
        return False

    def bind(self, model: nn.Module, maskable: Mapping[str, nn.Parameter]) -> None:
        """Called once with the model, for fresh and resumed runs alike, before anything else."""

    def describe(self) -> dict[str, Any]:
        """What run.json records about the method's resolved layout (``method_info``), after
        the start masks are drawn; JSON-able."""
        return {}

    def init_event(self) -> dict[str, Any]:
        """``masks``/``weights`` for the ``init`` event when they are not the live ones."""
        return {}

    def computes(self, step: int) -> bool:
        """Whether this process runs iteration ``step`` (forward, backward, step); P-GaP's
        processes skip the other replicas' iterations (the update is still called)."""
        return True

    def counts_step(self, step: int) -> bool:
        """Whether this process adds iteration ``step``'s loss and accuracy to the epoch's sums
        (summed over the processes): every process that computes it, except where several
        compute the same thing (P-GaP's fine-tuning: rank 0 only)."""
        return self.computes(step)

    def eval_rank(self, step: int) -> int | None:
        """The rank whose model is evaluated after iteration ``step`` on the whole split, or None
        when every rank holds the same model (the split is shared)."""
        return None

    def can_checkpoint(self, step: int) -> bool:
        """Whether a checkpoint after iteration ``step`` captures the run (not while P-GaP's
        replicas live on different processes)."""
        return True

    def lr_position(self, step: int) -> tuple[int, int]:
        """``(step, length)`` at which the LR schedule is read for iteration ``step``: the whole
        run by default; a method that restarts the schedule (GaP's ``gap_restart``) says where."""
        return step, self.total_steps

    def skip_step(self, step: int) -> bool:
        """Whether the loop skips ``optimizer.step()`` at iteration ``step`` (RigL's update steps)."""
        return False

    def update(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        """Change the masks after iteration ``step`` if the method's schedule says so.

        Called after ``optimizer.step()`` (or its skip) and ``masking.apply(optimizer)``;
        ``p.grad`` still holds the minibatch's dense gradient. Calls ``record(kind, **scalars)``
        right after each mask change.
        """

    def scalars(self) -> dict[str, Any]:
        """Current scalars for the progress bar and summary (no device synchronisation)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (generator state, fired masks, ...)."""
        return {"method": self.name, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (from a checkpoint of the same method)."""
        if not isinstance(state, Mapping) or state.get("method") != self.name:
            got = state.get("method") if isinstance(state, Mapping) else type(state).__name__
            raise MaskValidationError(
                f"sparsifier state is for method {got!r}, this run uses {self.name!r}"
            )
        self.generator.set_state(state["generator"].cpu())

    def _check_maskable(self, maskable: Mapping[str, nn.Parameter]) -> None:
        if not maskable:
            raise MaskValidationError(
                f"method {self.name!r}: the model has no maskable layer left (nn.Linear / nn.Conv "
                "weights, minus first_dense / last_dense)"
            )
