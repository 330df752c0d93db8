r"""Schedules of the sparse trainer: pure functions of the step, no state.

* :func:`cubic_density`: the gradual-pruning density of Zhu & Gupta (2017), used by GMP and
  GraNet; :func:`prune_events` lays its pruning events on the update steps.
* :func:`cosine_rate`: the drop (death / regeneration) rate of ITOP, RigL and GraNet.
* :func:`exp_density`: the exponential schedule of iterative pruning (SynFlow, FORCE).

A *step* is the 0-based index of a training iteration; an *update step* is one after which the
mask may change, ``(step + 1) % interval == 0``. Schedules read ``t = step + 1``, the number of
iterations completed when the update runs (methods-spec §1.5).
"""

from __future__ import annotations

import math

from ..errors import MaskValidationError

__all__ = [
    "cosine_rate",
    "cubic_density",
    "exp_density",
    "is_update_step",
    "prune_events",
]


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def cubic_density(progress: float, d_init: float, d_final: float) -> float:
    r"""Density of the cubic gradual-pruning schedule at ``progress`` in [0, 1].

    Zhu & Gupta (2017), *To prune, or not to prune*, eq. (1), in density form (GraNet, Liu et al.
    NeurIPS 2021):

    .. math:: d(p) = d_f + (d_i - d_f)\,(1 - p)^3 ,

    so :math:`d(0) = d_i`, :math:`d(1) = d_f` and the pruning is fast early and slow late.
    ``progress`` is clipped to [0, 1].

    Parameters
    ----------
    progress : float
        Fraction of the pruning phase done.
    d_init, d_final : float
        Densities at the start and at the end of the phase.

    Examples
    --------
    >>> cubic_density(0.0, 1.0, 0.1), cubic_density(1.0, 1.0, 0.1)
    (1.0, 0.1)
    >>> round(cubic_density(0.5, 1.0, 0.2), 12)
    0.3
    """
    p = _clip01(progress)
    if p == 1.0:  # exactly d_final, without rounding
        return float(d_final)
    return float(d_final) + (float(d_init) - float(d_final)) * (1.0 - p) ** 3


def cosine_rate(t: float, horizon: float, rate: float, rate_min: float = 0.0) -> float:
    r"""Cosine-decayed drop rate at iteration ``t``.

    .. math:: p_t = p_\min + (p_0 - p_\min)\,\frac{1 + \cos(\pi \min(t, T) / T)}{2}

    ITOP (Liu et al. ICML 2021) and GraNet decay from :math:`p_0 = 0.5` to
    :math:`p_\min = 0.005` over the whole run (:math:`T` = total steps, PyTorch's
    ``CosineAnnealingLR``); RigL (Evci et al. ICML 2020) decays :math:`\alpha = 0.3` to 0 at
    :math:`T = T_\text{end}`. Past ``horizon`` the rate stays at ``rate_min``.

    Examples
    --------
    >>> cosine_rate(0, 100, 0.5, 0.005), cosine_rate(100, 100, 0.5, 0.005)
    (0.5, 0.005)
    >>> cosine_rate(50, 100, 0.3)
    0.15
    """
    if horizon <= 0:
        raise MaskValidationError(f"cosine horizon must be positive, got {horizon!r}")
    x = min(max(float(t), 0.0), float(horizon)) / float(horizon)
    if x == 1.0:
        return float(rate_min)
    return float(rate_min) + (float(rate) - float(rate_min)) * 0.5 * (1.0 + math.cos(math.pi * x))


def exp_density(j: int, iterations: int, density: float, d_init: float = 1.0) -> float:
    r"""Density after round ``j`` of ``iterations`` on the exponential schedule.

    .. math:: d_j = d_i \,(d / d_i)^{j / J}

    With :math:`d_i = 1` this is SynFlow's (Tanaka et al. NeurIPS 2020) and FORCE's
    :math:`d^{j/J}` (methods-spec §1.5): :math:`d_0 = d_i`, :math:`d_J = d`.

    Examples
    --------
    >>> exp_density(0, 10, 0.01), exp_density(10, 10, 0.01), exp_density(1, 2, 0.01)
    (1.0, 0.01, 0.1)
    """
    if iterations < 1 or not 0 <= j <= iterations:
        raise MaskValidationError(f"round {j!r} of {iterations!r} is out of range")
    if j == iterations:
        return float(density)
    return float(d_init) * (float(density) / float(d_init)) ** (j / iterations)


def is_update_step(step: int, interval: int) -> bool:
    """Whether the mask may change after iteration ``step`` (0-based): ``(step + 1) % interval == 0``."""
    return (step + 1) % interval == 0


def prune_events(total_steps: int, interval: int, start: float, end: float) -> list[int]:
    r"""The steps of the pruning events of GMP and GraNet.

    Events are the update steps whose iteration count :math:`t = \text{step} + 1` lies in
    :math:`(t_0, t_f]` with :math:`t_0 = \lfloor \text{start} \cdot T \rfloor` and
    :math:`t_f = \lfloor \text{end} \cdot T \rfloor` (:math:`T` = ``total_steps``). Event
    :math:`u = 1 \dots U` is at progress :math:`u / U` of :func:`cubic_density`, so the last one
    reaches the final density exactly (the reference GraNet stops one event short, methods-spec
    §3.1; Zhu & Gupta's schedule ends at :math:`s_f`, as here). When :math:`t_0` and :math:`t_f`
    are multiples of the interval, :math:`u / U = (t - t_0)/(t_f - t_0)`, Zhu & Gupta's progress.

    Returns
    -------
    list of int
        The 0-based steps, increasing; empty when the window holds no update step.
    """
    t0 = math.floor(start * total_steps)
    tf = math.floor(end * total_steps)
    first = (t0 // interval + 1) * interval  # first multiple of the interval above t0
    return [t - 1 for t in range(first, tf + 1, interval)]
