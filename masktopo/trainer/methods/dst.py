r"""Dynamic sparse training: ITOP, SET and RigL as configured variants of one core.

Start: a random mask with exact per-layer counts at ``density`` (``distribution``, ERK by default;
methods-spec §1.6). Every :math:`\Delta T` = ``update_interval`` iterations, at the update steps
``(step + 1) % ΔT == 0`` before ``update_end``, each maskable layer :math:`l` with :math:`a_l`
active weights is rewired at the rate

.. math:: p_t = p_\min + (p_0 - p_\min)\,\frac{1 + \cos(\pi t / T)}{2}, \qquad
          n_l = \lceil p_t\, a_l \rceil \ \text{(ITOP, SET)} \quad\text{or}\quad
          \lfloor p_t\, a_l \rfloor \ \text{(RigL)}

(:math:`t` = iterations done, :math:`T` = ``update_end`` · total steps, the whole run when
``update_end`` is None): drop :math:`n_l` active weights (smallest :math:`|w|`, or SET's
positive/negative halves), grow :math:`n_l` among the positions empty after the drop (random,
:math:`|g|`, dense momentum, or never-fired first), grown weights at 0 except a just-dropped weight
regrown in the same update, which keeps its value unless ``reinit_when_same``
(:func:`masktopo.trainer.core.rewire`). The fired masks :math:`\bigcup_t m_t` give ITOP's
:math:`R_s` (:func:`masktopo.trainer.core.itop_rate`).

* ``itop``: Liu, Yin, Mocanu, Pechenizkiy, *Do we actually need dense over-parameterization?
  In-time over-parameterization in sparse training*, ICML 2021: :math:`p_0 = 0.5`,
  :math:`p_\min = 0.005`, updates through the whole run, :math:`\Delta T = 1500`, random growth
  (SET-ITOP; ``growth="gradient"`` is RigL-ITOP).
* ``set``: Mocanu et al., *Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science*, Nature Communications 2018, in ITOP's form.
* ``rigl``: Evci, Gale, Menick, Castro, Elsen, *Rigging the lottery: making all tickets
  winners*, ICML 2020: gradient growth, :math:`\alpha = 0.3` cosine to 0 at
  :math:`T_\text{end} = 0.75\,T`, no update after :math:`T_\text{end}`, :math:`\Delta T = 100`,
  the optimizer step skipped on update steps, :math:`\lfloor f_t a_l \rfloor` drops.

No update happens after the last iteration of the run (a weight grown there is never trained).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ...errors import MaskValidationError
from ..core import (
    DenseMomentum,
    _rewire_drawn,
    drop_count,
    get_growth,
    itop_rate,
    rewire_pending,
    start_masks,
)
from ..masking import Masking
from ..schedules import cosine_rate, is_update_step
from .base import Record, Sparsifier

__all__ = ["DST", "ITOP", "SET", "Regrowth", "RigL"]


class Regrowth:
    r"""The drop-and-grow machinery shared by DST and GraNet: fired masks, R_s, dense momentum.

    Parameters
    ----------
    cfg : TrainConfig
        Reads ``drop``, ``growth``, ``reinit_when_same`` and (for momentum growth) ``momentum``.
    generator : torch.Generator
        Ties and random growth.
    rounding : {"ceil", "floor"}
        The drop count :math:`\lceil p a \rceil` or :math:`\lfloor p a \rfloor`.
    """

    def __init__(self, cfg, generator: torch.Generator, rounding: str):
        self.drop = cfg.drop
        self.growth = cfg.growth
        self.reinit_when_same = bool(cfg.reinit_when_same)
        self.generator = generator
        self.rounding = rounding
        needs = get_growth(cfg.growth).needs
        self.momentum = DenseMomentum(cfg.momentum) if "momentum" in needs else None
        self.fired: dict[str, torch.Tensor] | None = None
        self.R_s: float | None = None
        self._drew = False  # whether the last update drew among tied scores (see apply)

    def track(self, masking: Masking) -> None:
        """Per-step bookkeeping: the fired masks start from the first masks seen (one sync, once);
        momentum growth folds in the step's gradients."""
        self._start_fired(masking)
        if self.momentum is not None:
            self.momentum.step(masking.params)

    def _start_fired(self, masking: Masking) -> None:
        if self.fired is None:
            self.fired = {n: m.detach().clone() for n, m in masking.masks.items()}
            self.R_s = itop_rate(self.fired)
            masking.nnz()  # counted now, once: update steps then know the counts (set_masks)

    @torch.no_grad()
    def apply(
        self, masking: Masking, optimizer, rate: float
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Drop and regrow ``drop_count(rate, a_l)`` entries in every layer; update fired, R_s.

        Returns the per-layer drop and grow counts (equal: counts are preserved).

        On the device, the whole update makes one read back to the host: every layer is rewired
        with :func:`~masktopo.trainer.core.rewire_pending` (the counts :math:`a_l` are known,
        :meth:`Masking.nnz`), and one ``tolist`` reads whether any selection met a NaN or a tie
        that needs a random draw, together with the fired masks' counts (R_s). That read cannot
        go: the draw's length depends on the data and it comes from the method's generator,
        which later layers and updates share. When a draw is needed the generator is restored
        and the layers are rewired again one by one (:func:`~masktopo.trainer.core.rewire`: one
        read per selection, and the tied positions for a draw), which gives the same masks and
        the same generator use as always. Scores with few distinct values tie at the threshold
        at almost every update (gradients computed under bfloat16 autocast: 8 bits of
        mantissa), so after an update that drew, the next one goes one by one at once.
        """
        self._start_fired(masking)
        active = masking.nnz()
        counts = {n: drop_count(rate, active[n], self.rounding) for n in masking.names}
        start = self.generator.get_state()  # host memory, no device read
        done = None if self._drew else self._rewire_pending(masking, active, counts)
        if done is not None:
            new_masks, reset, fired_new, check, fired_counts = done
            flags = torch.stack([check, *fired_counts]).tolist()  # the update's one read
            if not flags[0]:
                masking.set_masks(new_masks, optimizer, nnz={n: active[n] for n in new_masks})
                masking.zero_entries(reset, optimizer)
                self.fired.update(fired_new)
                total = sum(f.numel() for f in self.fired.values())
                self.R_s = float(sum(flags[1:])) / total if total else 1.0
                return counts, dict(counts)
        self.generator.set_state(start)  # the draws of the pending pass, if any, are undone
        self._drew = self._rewire_exact(masking, optimizer, active, counts)
        return counts, dict(counts)

    def _rules(self, params, name: str) -> dict[str, Any]:
        """The drop/growth keyword arguments of one layer's rewire (either form)."""
        momenta = self.momentum.buffers if self.momentum is not None else None
        return dict(drop=self.drop, growth=self.growth, grad=params[name].grad,
                    momentum=None if momenta is None else momenta.get(name),
                    fired=self.fired[name], reinit_when_same=self.reinit_when_same)  # fmt: skip

    def _rewire_pending(self, masking: Masking, active, counts):
        """Every layer by :func:`rewire_pending` (None for a drop rule without its form):
        (new masks, resets, new fired masks, one check, fired counts), all on the device."""
        masks, params = masking.masks, masking.params
        new_masks, reset, checks = {}, {}, []
        for name in masking.names:
            n = counts[name]
            if n == 0:
                continue
            out = rewire_pending(params[name], masks[name], n, active[name], self.generator,
                                 **self._rules(params, name))  # fmt: skip
            if out is None:
                return None
            new_masks[name], reset[name], check = out
            checks.append(check)
        device = next(iter(masks.values())).device  # where the one read is gathered
        check = torch.zeros((), dtype=torch.bool, device=device)
        for c in checks:
            check = check | c.to(device)
        fired_new = {n: self.fired[n] | new_masks.get(n, m) for n, m in masks.items()}
        fired_counts = [f.count_nonzero().to(device) for f in fired_new.values()]
        return new_masks, reset, fired_new, check.to(torch.int64), fired_counts

    def _rewire_exact(self, masking: Masking, optimizer, active, counts) -> bool:
        """Every layer by :func:`rewire`, one after the other (reads back per selection);
        whether a selection drew among tied scores."""
        masks, params = masking.masks, masking.params
        new_masks, reset, drew = {}, {}, False
        for name in masking.names:
            n = counts[name]
            if n == 0:
                continue
            new_masks[name], reset[name], drew_here = _rewire_drawn(
                params[name], masks[name], n, self.generator, active=active[name],
                **self._rules(params, name),
            )  # fmt: skip
            drew = drew or drew_here
        masking.set_masks(new_masks, optimizer, nnz={n: active[n] for n in new_masks})
        masking.zero_entries(reset, optimizer)
        for name, m in masking.masks.items():
            self.fired[name] |= m
        self.R_s = itop_rate(self.fired)
        return drew

    def state_dict(self) -> dict[str, Any]:
        fired = None if self.fired is None else {n: f.clone() for n, f in self.fired.items()}
        return {
            "fired": fired,
            "R_s": self.R_s,
            "momentum": None if self.momentum is None else self.momentum.state_dict(),
        }

    def load_state_dict(self, state, device) -> None:
        fired = state["fired"]
        self.fired = None if fired is None else {n: f.to(device) for n, f in fired.items()}
        self.R_s = state["R_s"]
        if self.momentum is not None and state.get("momentum") is not None:
            self.momentum.load_state_dict(state["momentum"], device)


class RegrowthState:
    """Scalars and checkpoint state of a method that owns ``self.rate`` and ``self.regrowth``
    (DST and GraNet); put it before the :class:`Sparsifier` base in the class bases."""

    def scalars(self) -> dict[str, Any]:
        out: dict[str, Any] = {**super().scalars(), "rate": self.rate}
        if self.regrowth.R_s is not None:
            out["R_s"] = self.regrowth.R_s
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rate": self.rate, "regrowth": self.regrowth.state_dict()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.rate = float(state["rate"])
        self.regrowth.load_state_dict(state["regrowth"], self.device)


class DST(RegrowthState, Sparsifier):
    """Drop-and-grow at constant per-layer counts (module docstring: ITOP, SET, RigL)."""

    name: ClassVar[str] = "itop"
    summary: ClassVar[str] = (
        "ITOP: prune-and-regrow through the whole run (SET-ITOP; RigL-ITOP with --growth gradient)"
    )
    defaults: ClassVar[dict] = {
        "distribution": "erk",
        "update_interval": 1500,
        "growth": "random",
        "drop": "magnitude",
        "rate": 0.5,
        "rate_min": 0.005,
        "update_end": None,
        "skip_step_on_update": False,
        "reinit_when_same": False,
    }
    #: Drop count rounding: ceil (ITOP/SET/GraNet) or floor (RigL).
    rounding: ClassVar[str] = "ceil"

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        super().__init__(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                         device=device)  # fmt: skip
        self.interval = int(cfg.update_interval)
        end = cfg.update_end
        self.horizon = total_steps if end is None else end * total_steps
        self.end = None if end is None else end * total_steps
        self.regrowth = Regrowth(cfg, self.generator, self.rounding)
        self.rate = cosine_rate(0, self.horizon, cfg.rate, cfg.rate_min)
        if not any(self.is_update(s) for s in range(self.interval - 1, total_steps, self.interval)):
            raise MaskValidationError(
                f"{self.name}: no mask update in {total_steps} steps with update_interval "
                f"{self.interval}" + ("" if end is None else f" and update_end {end}")
                + ": lower update_interval or train longer"
            )  # fmt: skip

    def init_masks(self, model, maskable, generator, *, batches=None):
        """Random masks with exact per-layer counts at ``density`` (``distribution``)."""
        self._check_maskable(maskable)
        return start_masks(maskable, self.cfg.density, self.cfg.distribution, generator), None

    def is_update(self, step: int) -> bool:
        """An update step: ``(step + 1) % ΔT == 0``, before ``update_end`` and the last step."""
        return (
            is_update_step(step, self.interval)
            and step + 1 < self.total_steps
            and (self.end is None or step < self.end)
        )

    def skip_step(self, step: int) -> bool:
        """RigL skips the optimizer step on its update steps (``skip_step_on_update``)."""
        return bool(self.cfg.skip_step_on_update) and self.is_update(step)

    def rate_at(self, step: int) -> float:
        """The drop rate :math:`p_t` after iteration ``step`` (``t = step + 1``)."""
        return cosine_rate(step + 1, self.horizon, self.cfg.rate, self.cfg.rate_min)

    def update(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        self.regrowth.track(masking)
        if not self.is_update(step):
            return
        self.rate = self.rate_at(step)
        drops, grows = self.regrowth.apply(masking, optimizer, self.rate)
        record("update", rate=self.rate, R_s=self.regrowth.R_s, drop=drops, grow=grows)


class ITOP(DST):
    """ITOP (Liu et al. ICML 2021): SET-ITOP by default, RigL-ITOP with gradient growth."""

    name = "itop"


class SET(DST):
    """SET (Mocanu et al. 2018) in ITOP's form: random growth, cosine rate, update interval."""

    name = "set"
    summary = "SET in ITOP form: magnitude drop, random growth"


class RigL(DST):
    """RigL (Evci et al. ICML 2020): gradient growth, cosine to 0 at 75%, floor counts, skip."""

    name = "rigl"
    summary = "RigL: gradient growth, alpha 0.3, updates stop at 75% of training"
    defaults: ClassVar[dict] = {
        **DST.defaults,
        "update_interval": 100,
        "growth": "gradient",
        "rate": 0.3,
        "rate_min": 0.0,
        "update_end": 0.75,
        "skip_step_on_update": True,
    }
    rounding = "floor"
