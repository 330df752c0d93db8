r"""GaP: scheduled grow-and-prune, cyclic (C-GaP) and parallel (P-GaP).

Ma, Sun, Yang, Li, Ding, Wang, Qin, Wang, Mao, Shen, Li, Zhang, *Effective model sparsification by
scheduled grow-and-prune methods*, ICLR 2022 (methods-spec §4). The maskable layers are split into
:math:`\kappa` partitions (:mod:`masktopo.trainer.partitions`); every layer :math:`l` has a target
count :math:`k_l` from ``density`` and ``distribution`` (``uniform``: every layer at the same
density, the paper's setting; ``erk``, ``er``) or from a mask file (``init_masks``). A GaP *step*
lasts :math:`L` = floor(``step_epochs`` · steps per epoch) iterations.

**C-GaP** (``gap_mode = "cyclic"``). Start from the random initialization with every partition but
the first masked at its counts (random masks, exact counts) and partition 0 dense. After step
:math:`b = 1 \dots \kappa C` (``cycles`` = :math:`C`), at iteration :math:`bL`:

1. *prune*: magnitude-prune the partition that was dense, :math:`(b-1) \bmod \kappa`, back to
   exactly :math:`k_l` in each of its layers (per-layer top-:math:`k` of :math:`|w|`; ties drawn
   from the method's generator); recorded as event ``prune`` with ``partition``;
2. *grow* (unless :math:`b = \kappa C`): partition :math:`b \bmod \kappa` becomes dense (its
   pruned weights re-enter at 0, with no optimizer history); recorded as event ``grow``.

The other partitions keep fixed masks, re-applied after every optimizer step (masktopo's masking).
After the last prune, the remaining iterations (``finetune_epochs``) fine-tune with every mask
fixed; the final event is at exactly :math:`k_l` in every layer.

**P-GaP** (``gap_mode = "parallel"``): per round, :math:`\kappa` replicas of the combined model,
replica :math:`i` with partition :math:`i` dense, each trained for one step; the combined model
takes partition :math:`i` from replica :math:`i` and every other parameter (biases, norms, dense
layers) by ``gap_combine`` (``average`` of the replicas, or ``first``: replica 0); then every layer
is magnitude-pruned to :math:`k_l`. Every replica and the combined model start with a fresh
optimizer state. In one process the replicas run one after another (this class swaps the model's
state at their boundaries); under torchrun with :math:`\kappa` processes each trains its own
(the loop's hooks :meth:`computes`, :meth:`eval_rank`, :meth:`can_checkpoint`).

Choices where the paper is silent (docs/trainer.md): C-GaP keeps the optimizer state across steps
(a grown weight starts with none) and the LR schedule spans the whole run, unless ``gap_restart`` (the reference restarts training at
every step: the optimizer state is cleared and the LR schedule, warm-up included, runs again within
each step and then within the fine-tuning).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ...errors import MaskValidationError
from ..core import prune_magnitude, random_masks, start_counts
from ..masking import Masking
from ..partitions import partition_layers
from .base import Record, Sparsifier

__all__ = ["GaP", "gap_layout"]


def gap_layout(cfg, steps_per_epoch: int) -> tuple[int, int, int]:
    """``(K, L, n_steps)``: partitions, iterations per GaP step (``step_epochs`` · steps per epoch,
    rounded down, so the steps fit in the derived epochs) and GaP steps (C-GaP: K · cycles steps;
    P-GaP: K replica steps per round, ``cycles`` rounds).

    Raises
    ------
    MaskValidationError
        A step shorter than one iteration.
    """
    k = cfg.partitions if cfg.partition_map is None else len(set(cfg.partition_map.values()))
    length = math.floor(cfg.step_epochs * steps_per_epoch + 1e-9)  # within the derived epochs
    if length < 1:
        raise MaskValidationError(
            f"gap: step_epochs {cfg.step_epochs} is less than one iteration ({steps_per_epoch} "
            "iterations per epoch)"
        )
    return int(k), length, int(k) * int(cfg.cycles)


class GaP(Sparsifier):
    """Scheduled grow-and-prune (module docstring): C-GaP and P-GaP over the training loop."""

    name: ClassVar[str] = "gap"
    summary: ClassVar[str] = (
        "scheduled grow-and-prune: cyclic (C-GaP) or parallel (P-GaP) partitions"
    )
    defaults: ClassVar[dict] = {
        "distribution": "uniform",
        "gap_mode": "cyclic",
        "partitions": None,
        "partition_map": None,
        "step_epochs": 2.0,
        "cycles": 4,
        "finetune_epochs": 4.0,
        "gap_restart": False,
        "gap_combine": "average",
    }

    @classmethod
    def resolve(cls, cfg) -> dict[str, Any]:
        """Config changes: 3 partitions when neither ``partitions`` nor ``partition_map`` is
        given; ``epochs`` = ceil(steps · ``step_epochs`` + ``finetune_epochs``) (an explicit
        ``epochs`` must equal it)."""
        changes: dict[str, Any] = {}
        partitions = cfg.partitions
        if cfg.partition_map is not None and partitions is not None:
            raise MaskValidationError("gap: give partitions (a count) or partition_map, not both")
        if cfg.partition_map is None and partitions is None:
            partitions = changes["partitions"] = 3
        k = partitions if cfg.partition_map is None else len(set(cfg.partition_map.values()))
        total = k * cfg.cycles * cfg.step_epochs + cfg.finetune_epochs
        epochs = math.ceil(total - 1e-9)
        if cfg.epochs is not None and cfg.epochs != epochs:
            raise MaskValidationError(
                f"gap: epochs is set by the schedule ({k} partitions x {cfg.cycles} cycles x "
                f"{cfg.step_epochs} step_epochs + {cfg.finetune_epochs} finetune_epochs = "
                f"{epochs}); leave epochs out or set it to {epochs}"
            )
        changes["epochs"] = epochs
        return changes

    @classmethod
    def independent_ranks(cls, cfg) -> bool:
        """P-GaP under torchrun: one replica per process (no DDP)."""
        return cfg.gap_mode == "parallel"

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        super().__init__(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                         device=device)  # fmt: skip
        self.K, self.L, self.n_steps = gap_layout(cfg, steps_per_epoch)
        if self.n_steps * self.L > total_steps:
            raise MaskValidationError(
                f"gap: {self.n_steps} steps of {self.L} iterations need {self.n_steps * self.L} "
                f"iterations, the run has {total_steps}"
            )
        self.parallel = cfg.gap_mode == "parallel"
        self.rounds = int(cfg.cycles)
        self.parts: dict[str, int] | None = None
        self.counts: dict[str, int] | None = None
        self.dense_partition = 0
        self.model = None
        self.rank, self.world = 0, 1
        # P-GaP: the combined model (state and masks) and the replicas' states of this round
        self.combined: dict[str, torch.Tensor] | None = None
        self.combined_masks: dict[str, torch.Tensor] | None = None
        self.stash: dict[int, dict[str, torch.Tensor]] = {}

    # -- start ------------------------------------------------------------------------------------
    def bind(self, model, maskable) -> None:
        """Resolve the partitions; P-GaP under torchrun: one replica per process."""
        self.model = model
        self.parts = partition_layers({n: p.numel() for n, p in maskable.items()},
                                      self.cfg.partitions, self.cfg.partition_map)  # fmt: skip
        import torch.distributed as dist

        if self.parallel and dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if self.world not in (1, self.K):
                raise MaskValidationError(
                    f"gap parallel: {self.world} processes for {self.K} partitions; run one "
                    f"process per replica (torchrun --nproc_per_node={self.K}) or a single one"
                )

    def layers_of(self, partition: int) -> list[str]:
        """The layers of ``partition``, in model order."""
        return [n for n, p in self.parts.items() if p == partition]

    @property
    def spread(self) -> bool:
        """P-GaP with one replica per process."""
        return self.parallel and self.world > 1

    def _mine(self, replica: int) -> bool:
        return not self.spread or replica == self.rank

    def init_masks(self, model, maskable, generator, *, batches=None):
        """Random masks with exact counts (or a file's masks); C-GaP: partition 0 dense; P-GaP:
        the combined model is the initialization with those masks applied, and this process
        starts replica 0 (or its own)."""
        self._check_maskable(maskable)
        weights = None
        if self.cfg.init_masks is not None:
            from .static import masks_from_file

            masks, weights = masks_from_file(self.cfg.init_masks, model, maskable)
            self.counts = {n: int(m.sum()) for n, m in masks.items()}
        else:
            shapes = {n: tuple(p.shape) for n, p in maskable.items()}
            self.counts = start_counts(shapes, self.cfg.density, self.cfg.distribution)
            device = next(iter(maskable.values())).device
            masks = random_masks(shapes, self.counts, generator, device)
        if self.parallel:
            with torch.no_grad():
                start = {n: (weights[n] if weights else p.detach()) * masks[n]
                         for n, p in maskable.items()}  # fmt: skip
            self.combined_masks = {n: m.clone() for n, m in masks.items()}
            self.combined = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.combined.update({n: w.clone() for n, w in start.items()})
            weights = start
            first = self.rank if self.spread else 0
        else:
            first = 0
        masks = self._replica_masks(first, masks)
        self.dense_partition = first
        return masks, weights

    def _replica_masks(self, partition: int, masks) -> dict[str, torch.Tensor]:
        out = {n: m.clone() for n, m in masks.items()}
        for n in self.layers_of(partition):
            out[n] = torch.ones_like(out[n])
        return out

    def describe(self) -> dict[str, Any]:
        """The resolved layer -> partition map, the per-layer target counts and the schedule."""
        return {"mode": self.cfg.gap_mode, "partitions": dict(self.parts),
                "counts": dict(self.counts or {}), "step_iterations": self.L,
                "gap_steps": self.n_steps, "finetune_start": self.n_steps * self.L,
                "processes": self.world if self.spread else 1,
                "combine": self.cfg.gap_combine if self.parallel else None}  # fmt: skip

    def init_event(self) -> dict[str, Any]:
        """The init event is partition 0's grow (P-GaP: replica 0's start in round 0, whichever
        replica this process holds)."""
        if not self.parallel:
            return {"partition": 0}
        if not self.spread:
            return {"partition": 0, "round": 0}
        return {"masks": self._replica_masks(0, self.combined_masks),
                "weights": self._combined_weights(), "partition": 0, "round": 0}  # fmt: skip

    def _combined_weights(self) -> dict[str, torch.Tensor]:
        return {n: self.combined[n] for n in self.parts}

    # -- C-GaP ------------------------------------------------------------------------------------
    def boundary(self, step: int) -> int | None:
        """``b`` (1-based) when iteration ``step`` ends GaP step ``b``, else None."""
        done = step + 1
        if done % self.L or done // self.L > self.n_steps:
            return None
        return done // self.L

    def prune_partition(self, partition: int, masking: Masking, optimizer) -> dict[str, int]:
        """Magnitude-prune ``partition``'s layers to their counts; the dropped counts."""
        return self._prune(self.layers_of(partition), masking, optimizer)

    def _prune(self, names, masking: Masking, optimizer) -> dict[str, int]:
        masks, params = masking.masks, masking.params
        before = {n: int(masks[n].sum()) for n in names}
        new = prune_magnitude({n: params[n] for n in names}, {n: masks[n] for n in names},
                              {n: self.counts[n] for n in names}, self.generator)  # fmt: skip
        masking.set_masks(new, optimizer)
        return {n: before[n] - self.counts[n] for n in names}

    def grow_partition(self, partition: int, masking: Masking, optimizer) -> None:
        """Make ``partition``'s layers dense: the weights that come back are 0 with no optimizer
        history (momentum and Adam's moments zeroed there, whatever ``mask_adam`` says)."""
        live = masking.masks
        names = self.layers_of(partition)
        new = {n: ~live[n] for n in names}
        masking.set_masks({n: torch.ones_like(live[n]) for n in names}, optimizer)
        masking.zero_entries(new, optimizer)

    def update(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        if self.parallel:
            self._update_parallel(step, masking, optimizer, record)
            return
        b = self.boundary(step)
        if b is None:
            return
        p = (b - 1) % self.K
        drop = self.prune_partition(p, masking, optimizer)
        self.dense_partition = -1
        record("prune", partition=p, gap_step=b - 1, drop=drop)
        if b < self.n_steps:
            q = b % self.K
            self.grow_partition(q, masking, optimizer)
            self.dense_partition = q
            record("grow", partition=q, gap_step=b)
        if self.cfg.gap_restart and optimizer is not None:
            optimizer.state.clear()

    # -- P-GaP ------------------------------------------------------------------------------------
    def _segment(self, step: int) -> tuple[int, int] | None:
        """``(round, replica)`` of iteration ``step``, None in the fine-tuning."""
        seg = step // self.L
        if seg >= self.n_steps:
            return None
        return seg // self.K, seg % self.K

    def computes(self, step: int) -> bool:
        seg = self._segment(step)
        return seg is None or self._mine(seg[1])

    def counts_step(self, step: int) -> bool:
        seg = self._segment(step)
        if seg is None:  # fine-tuning: every process trains the same model; count it once
            return self.rank == 0
        return self._mine(seg[1])

    def eval_rank(self, step: int) -> int | None:
        if not self.spread:
            return None
        nxt = self._segment(step + 1)  # the replica whose model follows iteration ``step``
        return None if nxt is None else nxt[1]  # None: fine-tuning, every rank is equal

    def can_checkpoint(self, step: int) -> bool:
        return not self.spread or self.eval_rank(step) is None

    @torch.no_grad()
    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()
                if not k.endswith("_mask") or k[: -len("_mask")] not in self.parts}  # fmt: skip

    @torch.no_grad()
    def _load(self, state: dict[str, torch.Tensor]) -> None:
        live = self.model.state_dict()
        for k, v in state.items():
            live[k].copy_(v)

    def _start_replica(self, replica: int, masking: Masking, optimizer) -> None:
        self._load(self.combined)
        masking.set_masks(self._replica_masks(replica, self.combined_masks), optimizer)
        if optimizer is not None:
            optimizer.state.clear()

    def _update_parallel(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        nxt = self._segment(step + 1)  # the same on every process, as in a one-process run
        self.dense_partition = -1 if nxt is None else nxt[1]
        done = step + 1
        if done % self.L or done // self.L > self.n_steps:
            return
        seg = done // self.L - 1
        r, i = divmod(seg, self.K)
        if self._mine(i):
            self.stash[i] = self._snapshot()
        if i < self.K - 1:  # the next replica of this round starts from the combined model
            j = i + 1
            if not self.spread:
                self._start_replica(j, masking, optimizer)
            record("grow", masks=self._replica_masks(j, self.combined_masks),
                   weights=self._combined_weights(), partition=j, round=r)  # fmt: skip
            return
        self._combine(masking, optimizer)
        record("prune", partition=-1, round=r)
        if optimizer is not None:
            optimizer.state.clear()
        if r + 1 < self.rounds:
            self._start_replica(self.rank if self.spread else 0, masking, optimizer)
            record("grow", masks=self._replica_masks(0, self.combined_masks),
                   weights=self._combined_weights(), partition=0, round=r + 1)  # fmt: skip

    @torch.no_grad()
    def _combine(self, masking: Masking, optimizer) -> None:
        """Partition i from replica i; the rest averaged (or replica 0's); every layer pruned."""
        import torch.distributed as dist

        local = self.stash[self.rank] if self.spread else None
        first = local if self.spread else self.stash[0]
        out = {}
        for k, ref in first.items():
            if k in self.parts:  # partition i from replica i
                src = self.parts[k]
                if self.spread:
                    out[k] = local[k].clone()
                    dist.broadcast(out[k], src=src)
                else:
                    out[k] = self.stash[src][k]
            elif self.cfg.gap_combine == "average" and ref.is_floating_point():
                if self.spread:  # gathered and summed in replica order: as in one process
                    parts = [torch.empty_like(local[k]) for _ in range(self.K)]
                    dist.all_gather(parts, local[k].contiguous())
                else:
                    parts = [self.stash[i][k] for i in range(self.K)]
                out[k] = sum(parts) / self.K
            elif self.spread:  # replica 0's
                out[k] = local[k].clone()
                dist.broadcast(out[k], src=0)
            else:
                out[k] = self.stash[0][k]
        self._load(out)
        masking.set_masks({n: torch.ones_like(m) for n, m in masking.masks.items()}, optimizer)
        self._prune(list(self.parts), masking, None)
        self.combined = self._snapshot()
        self.combined_masks = {n: m.detach().clone() for n, m in masking.masks.items()}
        self.stash = {}

    # -- the LR -----------------------------------------------------------------------------------
    def lr_position(self, step: int) -> tuple[int, int]:
        """With ``gap_restart`` the LR schedule restarts within each GaP step and then within the
        fine-tuning: ``(iteration within, length)``. Without: C-GaP reads the schedule over the
        whole run; P-GaP over *parallel time* (rounds of one step each, then the fine-tuning),
        so every replica of a round sees the same rates."""
        end = self.n_steps * self.L
        if self.cfg.gap_restart:
            if step >= end:
                return step - end, max(self.total_steps - end, 1)
            return step % self.L, self.L
        if not self.parallel:
            return step, self.total_steps
        horizon = self.rounds * self.L + (self.total_steps - end)
        if step >= end:
            return self.rounds * self.L + step - end, horizon
        r, _ = divmod(step // self.L, self.K)
        return r * self.L + step % self.L, horizon

    # -- state ------------------------------------------------------------------------------------
    def scalars(self) -> dict[str, Any]:
        return {"dense_partition": self.dense_partition}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "parts": dict(self.parts or {}),
                "counts": dict(self.counts or {}), "dense_partition": self.dense_partition,
                "combined": self.combined, "combined_masks": self.combined_masks,
                "stash": self.stash}  # fmt: skip

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.parts = dict(state["parts"])
        self.counts = {n: int(c) for n, c in state["counts"].items()}
        self.dense_partition = int(state["dense_partition"])
        self.combined = state.get("combined")
        self.combined_masks = state.get("combined_masks")
        self.stash = {int(i): s for i, s in (state.get("stash") or {}).items()}
