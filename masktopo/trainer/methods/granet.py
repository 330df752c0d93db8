r"""GraNet: gradual magnitude pruning plus zero-cost neuroregeneration.

Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu, *Sparse training via
boosting pruning plasticity with neuroregeneration*, NeurIPS 2021 (methods-spec §3). At every
update step ``(step + 1) % ΔT == 0`` after :math:`t_0` = ``prune_start`` · total steps:

1. if it is a pruning event, GMP's cubic pruning (:mod:`.gmp`, global by default), recorded as
   ``record("prune", target_density=d_u, ...)``;
2. then, until the end of training (not only while pruning), neuroregeneration: in each layer drop
   :math:`n_l = \lceil r_t a_l \rceil` weights of smallest :math:`|w|` and regrow as many by
   :math:`|g|` (``growth``) among the empty positions, grown weights at 0, so the per-layer counts
   are kept; :math:`r_t = r_\min + (r_0 - r_\min)(1 + \cos(\pi t / T))/2` over the whole run
   (:math:`r_0 = 0.5`, :math:`r_\min = 0.005`); recorded as ``record("regen", rate=r_t, R_s=...,
   drop=..., grow=...)``.

``init_density = 1`` is dense-to-sparse; ``init_density < 1`` is sparse-to-sparse from a random
mask with exact ERK counts (``distribution``). No regeneration after the last iteration.
"""

from __future__ import annotations

import math
from typing import ClassVar

from ..masking import Masking
from ..schedules import cosine_rate, is_update_step
from .base import Record
from .dst import Regrowth, RegrowthState
from .gmp import GMP

__all__ = ["GraNet"]


class GraNet(RegrowthState, GMP):
    """GMP plus neuroregeneration at every update (module docstring)."""

    name: ClassVar[str] = "granet"
    summary: ClassVar[str] = "GMP plus zero-cost neuroregeneration (dense- or sparse-to-sparse)"
    defaults: ClassVar[dict] = {
        **GMP.defaults,
        "growth": "gradient",
        "drop": "magnitude",
        "rate": 0.5,
        "rate_min": 0.005,
        "reinit_when_same": False,
    }

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        super().__init__(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                         device=device)  # fmt: skip
        self.t0 = math.floor(cfg.prune_start * total_steps)
        self.regrowth = Regrowth(cfg, self.generator, "ceil")
        self.rate = cosine_rate(0, total_steps, cfg.rate, cfg.rate_min)

    def is_regen(self, step: int) -> bool:
        """A regeneration step: an update step after :math:`t_0`, before the last iteration."""
        return (
            is_update_step(step, self.interval)
            and step + 1 > self.t0
            and step + 1 < self.total_steps
        )

    def update(self, step: int, masking: Masking, optimizer, record: Record) -> None:
        self.regrowth.track(masking)
        self.prune(step, masking, optimizer, record)
        if not self.is_regen(step):
            return
        self.rate = cosine_rate(step + 1, self.total_steps, self.cfg.rate, self.cfg.rate_min)
        drops, grows = self.regrowth.apply(masking, optimizer, self.rate)
        record("regen", rate=self.rate, R_s=self.regrowth.R_s, drop=drops, grow=grows)
