r"""Gradual CHITA: prune events on the cubic schedule, each a (multi-stage) CHITA solve, with
fine-tuning in between (Benbaki et al., ICML 2023, ``GradualPruner``; methods-spec §5.2, item 7).

The run starts dense. The pruning events are GMP's (:func:`masktopo.trainer.schedules.prune_events`
over ``update_interval``, ``prune_start``, ``prune_end``); event :math:`u = 1 \dots U` prunes to
the cubic density :math:`d_u = d_f + (1 - d_f)(1 - u/U)^3`. An event:

1. draws ``chita_samples`` x ``chita_batch`` training samples (its own seeded generator);
2. runs ``chita_stages`` CHITA++ stages from the current sparsity to :math:`1 - d_u` (cubic
   stage schedule), each recomputing the gradient matrix :math:`G` at the current weights and
   solving CHITA's problem (:mod:`masktopo.prune.solvers`, solver ``chita_solver``, ridge
   ``l2 = 1e-3``) at an exact count;
3. writes the new weights into the model, sets the masks to the solution's support (CHITA may
   revive an earlier-pruned weight) and clears the optimizer state (the reference re-creates the
   optimizer: momentum reset);
4. calls ``record("prune", target_density=d_u, objective=..., stages=...)``.

With ``chita_restart`` (default on, as the reference) the LR schedule restarts after every
prune event: iteration :math:`t` reads it at :math:`t - (e + 1)` of a span
:math:`e' - e` for the events :math:`e < t \le e'` (the first span starts at 0, the last ends
with the run), so with ``lr_schedule=cosine`` every fine-tuning interval is one cosine from
``lr`` down, the reference's schedule (0.1 → 1e-5 there; here down to 0). Off: one schedule
over the whole run.
"""

from __future__ import annotations

import bisect
from typing import ClassVar

import torch

from ...errors import MaskValidationError
from ..masking import Masking
from .base import Record
from .gmp import CubicEvents

__all__ = ["Chita"]


class Chita(CubicEvents):
    """Gradual CHITA (module docstring)."""

    name: ClassVar[str] = "chita"
    summary: ClassVar[str] = "gradual CHITA: cubic prune events, each a multi-stage CHITA solve"
    defaults: ClassVar[dict] = {
        "update_interval": 1000,
        "prune_start": 0.0,
        "prune_end": 0.5,
        "chita_samples": 500,
        "chita_batch": 16,
        "chita_stages": 4,
        "chita_solver": "chita",
        "chita_restart": True,
        "chita_keep_zero_columns": False,
    }

    def __init__(self, cfg, *, steps_per_epoch: int, total_steps: int, device):
        super().__init__(cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                         device=device)  # fmt: skip
        self.model = None
        self._data = None

    def bind(self, model, maskable) -> None:
        self.model = model

    def lr_position(self, step: int) -> tuple[int, int]:
        """With ``chita_restart``: ``(iteration within, length)`` of the fine-tuning span that
        iteration ``step`` belongs to (module docstring); else the whole run."""
        if not self.cfg.chita_restart or not self.events:
            return step, self.total_steps
        i = bisect.bisect_left(self.events, step)  # events before step: events[:i]
        start = self.events[i - 1] + 1 if i else 0
        end = self.events[i] + 1 if i < len(self.events) else self.total_steps
        return step - start, max(end - start, 1)

    def init_masks(self, model, maskable, generator, *, batches=None):
        """All-True masks: a dense start."""
        self._check_maskable(maskable)
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in maskable.items()}, None

    @classmethod
    def check_data(cls, cfg, train_samples: int) -> None:
        """Each prune event draws ``chita_samples x chita_batch`` distinct training samples."""
        n, m = int(cfg.chita_samples), int(cfg.chita_batch)
        if n * m > train_samples:
            raise MaskValidationError(f"chita: chita_samples x chita_batch = {n * m} is more "
                                      f"than the {train_samples} training samples")  # fmt: skip

    def _train_data(self):
        """The training split the trainer trains on (the validation part carved out the same
        way, from the same seed), on the device."""
        if self._data is None:
            from ..loop import training_split

            self._data = training_split(self.cfg)[0].to(self.device)
        return self._data

    def prune(self, step: int, masking: Masking, optimizer, record: Record) -> bool:
        """Run the pruning event of ``step``, if there is one; True when it ran."""
        u = self.event_at(step)
        if u is None:
            return False
        from ...pai.densities import keep_count
        from ...prune import Problem, SolverOptions, gradient_matrix, solve, stage_sparsities
        from ...prune.gradients import flatten, unflatten
        from ...seeding import generator

        cfg = self.cfg
        d = self.density_at_event(u)
        params = masking.params
        names = list(params)
        shapes = {n: tuple(params[n].shape) for n in names}
        p = sum(params[n].numel() for n in names)
        data = self._train_data()
        n, m = int(cfg.chita_samples), int(cfg.chita_batch)
        self.check_data(cfg, len(data))
        perm = torch.randperm(len(data), generator=generator(cfg.seed, "chita-sample", u))
        x, y = data.batch(perm[: n * m].to(self.device))
        start = 1.0 - masking.density()
        levels = stage_sparsities(1.0 - d, int(cfg.chita_stages), "poly", min(start, 1.0 - d))
        opts = SolverOptions(layer_sizes=tuple(params[n_].numel() for n_ in names),
                             keep_zero_columns=bool(cfg.chita_keep_zero_columns))  # fmt: skip
        model = self.model
        objective = float("nan")
        for s in levels:
            w_bar = flatten(params, names).double()
            G = gradient_matrix(model, names, x, y, loss=data.spec.loss_fn, minibatch=m,
                                dtype=torch.float64)  # fmt: skip
            pb = Problem.build(G, w_bar, l2=1e-3)
            sol = solve(pb, keep_count(1.0 - s, p), cfg.chita_solver, opts, self.generator)
            objective = sol.objective
            with torch.no_grad():
                for name, w in unflatten(sol.w, shapes).items():
                    params[name].copy_(w.to(params[name].dtype))
            masking.set_masks({k: v.clone() for k, v in unflatten(sol.support, shapes).items()})
        optimizer.state.clear()  # the reference re-creates the optimizer: momentum reset
        masking.apply(optimizer)
        self.target_density = d
        record("prune", target_density=d, objective=objective, stages=len(levels))
        return True
