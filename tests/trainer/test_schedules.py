"""Schedules: endpoints, shape and the layout of the pruning events."""

from __future__ import annotations

import itertools
import math

import pytest

from masktopo.errors import MaskValidationError
from masktopo.trainer import schedules as S


@pytest.mark.parametrize(("d_i", "d_f"), [(1.0, 0.1), (0.5, 0.02), (1.0, 1.0)])
def test_cubic_density_endpoints_and_shape(d_i, d_f):
    assert S.cubic_density(0.0, d_i, d_f) == d_i
    assert S.cubic_density(1.0, d_i, d_f) == d_f  # exactly, not up to rounding
    assert S.cubic_density(-0.5, d_i, d_f) == d_i and S.cubic_density(2.0, d_i, d_f) == d_f
    values = [S.cubic_density(p / 20, d_i, d_f) for p in range(21)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    # Zhu & Gupta's cubic: the remaining excess is (1 - p)^3 of the initial excess.
    for p in (0.1, 0.5, 0.9):
        assert S.cubic_density(p, d_i, d_f) - d_f == pytest.approx((d_i - d_f) * (1 - p) ** 3)
    if d_i > d_f:  # fast early, slow late
        assert S.cubic_density(0.5, d_i, d_f) - d_f < 0.5 * (d_i - d_f) / 2


def test_cosine_rate_endpoints_midpoint_and_floor():
    assert S.cosine_rate(0, 1000, 0.5, 0.005) == 0.5
    assert S.cosine_rate(1000, 1000, 0.5, 0.005) == 0.005
    assert S.cosine_rate(5000, 1000, 0.5, 0.005) == 0.005  # stays at the floor past T
    assert S.cosine_rate(500, 1000, 0.5, 0.005) == pytest.approx((0.5 + 0.005) / 2)
    assert S.cosine_rate(250, 1000, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    values = [S.cosine_rate(t, 100, 0.3, 0.0) for t in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(MaskValidationError, match="horizon"):
        S.cosine_rate(1, 0, 0.5)


def test_exponential_density_endpoints_and_geometric_steps():
    assert S.exp_density(0, 100, 0.01) == 1.0
    assert S.exp_density(100, 100, 0.01) == 0.01
    ratios = [S.exp_density(j + 1, 10, 0.05) / S.exp_density(j, 10, 0.05) for j in range(10)]
    assert ratios == pytest.approx([0.05 ** (1 / 10)] * 10)
    assert S.exp_density(5, 5, 0.1, d_init=0.5) == 0.1
    assert S.exp_density(0, 5, 0.1, d_init=0.5) == pytest.approx(0.5)
    for bad in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(MaskValidationError):
            S.exp_density(*bad, 0.1)


def test_update_steps():
    assert [s for s in range(20) if S.is_update_step(s, 5)] == [4, 9, 14, 19]
    assert all(S.is_update_step(s, 1) for s in range(5))


def test_prune_events_lie_in_the_window_on_update_steps():
    events = S.prune_events(1000, 100, 0.0, 0.5)
    assert events == [99, 199, 299, 399, 499]
    # Windows that are multiples of the interval: progress u/U is Zhu & Gupta's (t - t0)/(tf - t0).
    events = S.prune_events(1000, 50, 0.1, 0.6)
    t0, tf = 100, 600
    assert [(s + 1 - t0) / (tf - t0) for s in events] == [
        u / len(events) for u in range(1, len(events) + 1)
    ]
    # Any window: every event is an update step with t in (t0, tf].
    for total, interval, start, end in [(977, 37, 0.13, 0.71), (500, 7, 0.0, 1.0)]:
        events = S.prune_events(total, interval, start, end)
        assert events and all(S.is_update_step(s, interval) for s in events)
        assert all(math.floor(start * total) < s + 1 <= math.floor(end * total) for s in events)
        assert (
            len(events)
            == math.floor(end * total) // interval - math.floor(start * total) // interval
        )
    assert S.prune_events(100, 60, 0.0, 0.5) == []  # the window holds no update step
