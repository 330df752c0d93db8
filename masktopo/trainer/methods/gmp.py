r"""Gradual magnitude pruning (GMP) on the cubic schedule, globally or per layer.

Zhu & Gupta, *To prune, or not to prune: exploring the efficacy of pruning for model
compression*, ICLR workshop 2018 (arXiv 2017), in GraNet's form (Liu et al. NeurIPS 2021,
methods-spec §3.1). Start dense (``init_density = 1``) or from a random mask with exact counts at
``init_density`` (``distribution``). The pruning events are the update steps
``(step + 1) % ΔT == 0`` with :math:`t = \text{step} + 1 \in (t_0, t_f]`, :math:`t_0` =
``prune_start`` · total steps, :math:`t_f` = ``prune_end`` · total steps
(:func:`masktopo.trainer.schedules.prune_events`). Event :math:`u = 1 \dots U` prunes to

.. math:: d_u = d_f + (d_i - d_f)\,(1 - u / U)^3

(:func:`masktopo.trainer.schedules.cubic_density`), so the last event reaches ``density``
exactly; the reference GraNet stops one event short of it. Kept counts are exact
(:func:`masktopo.trainer.core.prune_targets`): global scope keeps the
:math:`\mathrm{round}(d_u N)` largest :math:`|w|` pooled over the maskable layers, layer scope
scales each layer's start density by :math:`d_u / d_i`; pruned weights never come back. Each event
calls ``record("prune", target_density=d_u, drop={layer: n})``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...errors import MaskValidationError
from ...pai.densities import layer_densities
from ..core import prune_magnitude, prune_targets, start_masks
from ..masking import Masking
from ..schedules import cubic_density, prune_events
from .base import Record, Sparsifier

__all__ = ["GMP", "CubicEvents"]


class CubicEvents(Sparsifier):
    """The pruning events of the cubic schedule, shared by the methods that prune on it (GMP,
    GraNet, gradual CHITA): ``self.events`` (the update steps in ``(prune_start, prune_end]``),
    :meth:`density_at_event` (:math:`d_u`), ``target_density`` in the scalars and checkpoints,
    and :meth:`update` calling the subclass's :meth:`prune`. The start density is
    ``init_density`` when the method uses it, else 1 (a dense start)."""

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        super().__init__(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                         device=device)  # fmt: skip
        self.interval = int(cfg.update_interval)
        init = getattr(cfg, "init_density", None) if "init_density" in self.defaults else None
        self.d_init = 1.0 if init is None else float(init)
        self.d_final = float(cfg.density)
        self.events = prune_events(total_steps, self.interval, cfg.prune_start, cfg.prune_end)
        if not self.events:
            raise MaskValidationError(
                f"{self.name}: no pruning event between prune_start {cfg.prune_start} and "
                f"prune_end {cfg.prune_end} of {total_steps} steps with update_interval "
                f"{self.interval}: lower update_interval or train longer"
            )
        self._event = {step: u for u, step in enumerate(self.events, start=1)}
        self.target_density = self.d_init

    def density_at_event(self, u: int) -> float:
        """Target network density of pruning event ``u`` (1-based): :math:`d_u`."""
        return cubic_density(u / len(self.events), self.d_init, self.d_final)

    def event_at(self, step: int) -> int | None:
        """The pruning event ``u`` (1-based) of iteration ``step``, or None."""
        return self._event.get(step)

    def prune(self, step: int, masking: Masking, optimizer, record: Record) -> bool:
        """Run the pruning event of ``step``, if there is one; True when it ran."""
        raise NotImplementedError

    def update(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        self.prune(step, masking, optimizer, record)

    def scalars(self) -> dict[str, Any]:
        return {"target_density": self.target_density}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "target_density": self.target_density}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.target_density = float(state["target_density"])


class GMP(CubicEvents):
    """Gradual magnitude pruning (module docstring)."""

    name: ClassVar[str] = "gmp"
    summary: ClassVar[str] = "gradual magnitude pruning on the cubic schedule"
    defaults: ClassVar[dict] = {
        "update_interval": 1000,
        "init_density": 1.0,
        "distribution": "erk",
        "prune_start": 0.0,
        "prune_end": 0.5,
        "prune_scope": "global",
    }

    def init_masks(self, model, maskable, generator, *, batches=None):
        """All-True masks (dense start) or exact random masks at ``init_density``."""
        self._check_maskable(maskable)
        return start_masks(maskable, self.d_init, self.cfg.distribution, generator), None

    def _start_densities(self, masking: Masking) -> dict[str, float] | None:
        if self.d_init >= 1.0:
            return None
        shapes = {n: tuple(m.shape) for n, m in masking.masks.items()}
        return layer_densities(shapes, self.d_init, self.cfg.distribution)

    def prune(self, step: int, masking: Masking, optimizer, record: Record) -> bool:
        """Run the pruning event of ``step``, if there is one; True when it ran."""
        u = self.event_at(step)
        if u is None:
            return False
        d = self.density_at_event(u)
        active = masking.nnz()
        keep = prune_targets(
            masking.numel(),
            active,
            d,
            scope=self.cfg.prune_scope,
            start_densities=self._start_densities(masking),
            d_init=self.d_init,
        )
        masking.set_masks(prune_magnitude(masking.params, masking.masks, keep, self.generator),
                          optimizer)  # fmt: skip
        after = masking.nnz()
        self.target_density = d
        record("prune", target_density=d, drop={n: active[n] - after[n] for n in active})
        return True
