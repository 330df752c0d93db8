"""Exact top-k with seeded tie-breaking, and the iterative schedules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.pai import select as S


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_top_k_without_ties_is_the_k_largest():
    s = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.5])
    assert S.top_k_mask(s, 3, _g()).tolist() == [False, False, True, True, True]
    assert S.top_k_mask(s, 0, _g()).sum() == 0
    assert bool(S.top_k_mask(s, 5, _g()).all())


def test_ties_at_the_threshold_are_drawn_with_the_generator():
    s = torch.tensor([5.0] + [1.0] * 99)  # one clear winner, 99 tied for the rest
    picks = []
    for seed in range(4):
        m = S.top_k_mask(s, 11, _g(seed))
        assert int(m.sum()) == 11 and bool(m[0])
        picks.append(tuple(torch.nonzero(m).flatten().tolist()))
        assert torch.equal(m, S.top_k_mask(s, 11, _g(seed)))  # same seed, same subset
    assert len(set(picks)) == 4  # different seeds, different subsets
    # Entries never tie above the threshold: strict winners are always kept.
    m = S.top_k_mask(torch.tensor([2.0, 2.0, 1.0, 1.0, 1.0]), 3, _g())
    assert bool(m[:2].all()) and int(m[2:].sum()) == 1


def test_minus_inf_is_never_kept_while_finite_scores_remain():
    s = torch.tensor([-math.inf, 0.0, -math.inf, 0.0, 0.0])
    m = S.top_k_mask(s, 3, _g())
    assert m.tolist() == [False, True, False, True, True]


def test_nan_scores_rejected():
    with pytest.raises(MaskValidationError, match="NaN"):
        S.top_k_mask(torch.tensor([1.0, math.nan, 0.0]), 1, _g())


def test_select_global_and_local():
    scores = {"a": torch.tensor([[3.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([1.0, 4.0, 0.5])}
    g = S.select_global(scores, 3, _g())  # 4.0, 3.0, 2.0
    assert g["a"].tolist() == [[True, False], [False, True]]
    assert g["b"].tolist() == [False, True, False]
    g = S.select_global(scores, 4, _g())  # ... and 1.0
    assert g["b"].tolist() == [True, True, False]
    loc = S.select_local(scores, {"a": 1, "b": 2}, _g())
    assert int(loc["a"].sum()) == 1 and bool(loc["a"][0, 0])
    assert loc["b"].tolist() == [True, True, False]


def test_exponential_schedule_matches_force_formula():
    d = 0.02
    got = S.schedule_densities(d, 10)
    want = [math.exp(-j * math.log(1 / d) / 10) for j in range(1, 11)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[-1] == pytest.approx(d)
    lin = S.schedule_densities(0.2, 4, "linear")
    assert lin == pytest.approx([0.8, 0.6, 0.4, 0.2])
    with pytest.raises(UnknownNameError, match="exponential"):
        S.schedule_densities(0.2, 4, "cubic")


def test_step_counts_monotone_and_exact():
    counts = S.step_counts(7, 1000, S.schedule_densities(7 / 1000, 100))
    assert counts[-1] == 7 and len(counts) == 100
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert counts[0] == round(1000 * (7 / 1000) ** 0.01)
    # tiny layer: rounding never climbs above the previous count nor drops below the final one
    small = S.step_counts(3, 5, S.schedule_densities(0.5, 10))
    assert small[-1] == 3 and all(3 <= c <= 5 for c in small)


def test_local_counts_sum_exactly():
    sizes = {"a": 7, "b": 13, "c": 1000}
    c = S.local_counts(sizes, 0.25)
    assert sum(c.values()) == round(0.25 * 1020)
    assert all(math.floor(0.25 * n) <= c[k] <= math.ceil(0.25 * n) for k, n in sizes.items())


def _reference_top_k(scores, k, generator):
    """top_k_mask as it was with torch.kthvalue and a read per step (the behaviour to keep)."""
    flat = scores.reshape(-1)
    n = flat.numel()
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = torch.kthvalue(flat, n - k + 1).values
    keep = flat > kth
    need = k - int(keep.sum())
    if need:
        tied = torch.nonzero(flat == kth).reshape(-1)
        if need < tied.numel():
            pick = torch.randperm(tied.numel(), generator=generator, device=generator.device)
            tied = tied[pick[:need]]
        keep[tied] = True
    return keep.reshape(scores.shape)


@pytest.mark.parametrize("levels", [None, 3, 40])  # continuous scores, heavy ties, a few ties
def test_top_k_mask_matches_the_kthvalue_reference_and_its_draws(levels):
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        shape = (7, 13) if trial % 2 else (91,)
        s = torch.randn(shape, generator=g)
        if levels is not None:
            s = torch.round(s * levels / 4)
        s[torch.rand(shape, generator=g) < 0.3] = float("-inf")
        for k in (0, 1, 5, 45, 60, s.numel() - 1, s.numel()):
            a, b = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
            got = S.top_k_mask(s, k, a)
            assert torch.equal(got, _reference_top_k(s, k, b)), (trial, k)
            assert torch.equal(a.get_state(), b.get_state())  # the same draws, if any
            keep, check = S.top_k_pending(s, k)
            if not bool(check.any()):  # final as it stands, and no draw was needed
                assert torch.equal(keep, got)


def test_top_k_pending_flags_nan_and_a_needed_draw_without_reading_back():
    keep, check = S.top_k_pending(torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0]), 2)
    assert check.tolist() == [False, True]  # 3 is kept; one of three 1s must be drawn
    keep, check = S.top_k_pending(torch.tensor([3.0, 1.0, 1.0, 0.0]), 3)
    assert check.tolist() == [False, False] and keep.tolist() == [True, True, True, False]
    _, check = S.top_k_pending(torch.tensor([float("nan"), 1.0, 2.0]), 1)
    assert check.tolist()[0] is True
    with pytest.raises(MaskValidationError, match="NaN"):
        S.top_k_mask(torch.tensor([float("nan"), 1.0, 2.0]), 1, torch.Generator())


def test_the_kth_largest_is_found_without_kthvalue(monkeypatch):
    """torch.kthvalue runs one CUDA thread block per slice (tens of ms for a layer of millions,
    pytorch/pytorch#75599): the selection uses torch.topk."""

    def refuse(*a, **k):
        raise AssertionError("torch.kthvalue was called")

    monkeypatch.setattr(torch, "kthvalue", refuse)
    monkeypatch.setattr(torch.Tensor, "kthvalue", refuse)
    s = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for k in (1, 10, 499, 500, 501, 999):
        assert int(S.top_k_mask(s, k, torch.Generator()).sum()) == k
        assert torch.equal(S._kth_largest(s, k), torch.sort(s, descending=True).values[k - 1])
