"""Shared DST/GMP pieces: exact top-k with random ties, drop and growth rules, start masks, R_s."""

from __future__ import annotations

import math

import pytest
import torch

from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.pai import layer_counts, layer_densities
from masktopo.trainer import core as C
from masktopo.zoo import get_model, maskable_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _idx(mask):
    return sorted(torch.nonzero(mask.reshape(-1)).flatten().tolist())


def test_top_k_respects_candidates_and_breaks_ties_at_random():
    s = torch.tensor([9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 7.0, 1.0])
    cand = torch.tensor([False, True, True, True, True, True, True, True])
    subsets = set()
    for seed in range(8):
        m = C.top_k(s, 3, _g(seed), cand)
        assert int(m.sum()) == 3 and bool(m[6]) and not bool(m[0])  # 9.0 is not a candidate
        subsets.add(tuple(_idx(m)))
        assert torch.equal(m, C.top_k(s, 3, _g(seed), cand))  # seeded: reproducible
    assert len(subsets) > 1  # the two tied picks vary with the seed
    with pytest.raises(MaskValidationError, match="cannot pick 8 of 7"):
        C.top_k(s, 8, _g(), cand)
    with pytest.raises(MaskValidationError, match="NaN"):
        C.top_k(torch.tensor([1.0, float("nan")]), 1, _g())


def test_drop_count_rounding():
    assert C.drop_count(0.5, 7) == 4 and C.drop_count(0.5, 7, "floor") == 3
    assert C.drop_count(0.3, 10) == 3 and C.drop_count(0.3, 10, "floor") == 3  # no 3.0000001
    assert C.drop_count(0.005, 10) == 1 and C.drop_count(0.005, 10, "floor") == 0
    assert C.drop_count(1.0, 5) == 5 and C.drop_count(0.0, 5) == 0
    with pytest.raises(UnknownNameError):
        C.drop_count(0.5, 4, "round")


def test_magnitude_drop_hand_case_with_ties():
    w = torch.tensor([[0.1, -0.1, 0.5, 0.1], [-2.0, 0.0, 0.1, -0.05]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, True]])
    # Active |w|: 0.1 (x4, tied), 0.5, 2.0, 0.05. Dropping 3: 0.05 and two of the four 0.1's.
    picks = set()
    for seed in range(10):
        d = C.drop_magnitude(w, mask, 3, _g(seed))
        assert int(d.sum()) == 3
        assert bool(d[1, 3]) and not bool(d[1, 1])  # the smallest; an inactive one never
        assert not bool(d[0, 2]) and not bool(d[1, 0])
        assert torch.allclose(w[d].abs()[w[d].abs() > 0.06], torch.tensor(0.1))
        picks.add(tuple(_idx(d)))
    assert len(picks) > 1
    assert int(C.drop_magnitude(w, mask, 0, _g()).sum()) == 0
    assert torch.equal(C.drop_magnitude(w, mask, 7, _g()), mask)
    with pytest.raises(MaskValidationError):
        C.drop_magnitude(w, mask, 8, _g())


def test_set_drop_takes_half_positive_half_negative():
    w = torch.tensor([0.3, 0.1, 0.2, 0.9, -0.4, -0.05, -0.2, -3.0, 0.01])
    mask = torch.ones(9, dtype=torch.bool)
    mask[8] = False
    d = C.drop_set(w, mask, 4, _g())
    assert _idx(d) == [1, 2, 5, 6]  # smallest positives 0.1, 0.2; negatives closest to 0
    d = C.drop_set(w, mask, 3, _g())
    assert _idx(d) == [1, 2, 5]  # ceil(3/2) positive, floor(3/2) negative
    # Too few negatives: the positives make up the rest, still exactly n.
    mask2 = torch.tensor([True, True, True, True, False, True, False, False, False])
    d = C.drop_set(w, mask2, 4, _g())
    assert _idx(d) == [0, 1, 2, 5]


def test_gradient_growth_picks_the_largest_gradients_among_the_empty():
    w = torch.zeros(2, 5)
    mask = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    grad = torch.tensor([[9.0, -5.0, 0.1, 8.0, 0.2], [4.0, -0.3, 7.0, 0.0, 6.0]])
    scores = C.growth_scores("gradient", weight=w, generator=_g(), grad=grad)
    grown = C.grow(scores, ~mask, 3, _g())
    # Active entries (9, 8, 7) are not candidates; the top |g| among the rest: -5, 6, 4.
    assert _idx(grown) == [1, 5, 9]
    with pytest.raises(MaskValidationError, match="dense gradient"):
        C.growth_scores("gradient", weight=w, generator=_g(), grad=None)
    nan = C.growth_scores("gradient", weight=w, generator=_g(), grad=grad.clone().fill_(math.nan))
    assert int(C.grow(nan, ~mask, 3, _g()).sum()) == 3  # NaN gradients do not break growth
    with pytest.raises(UnknownNameError):
        C.growth_scores("best", weight=w, generator=_g())


def test_random_growth_is_exact_and_uniform_over_the_empty():
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:10] = True
    hits = torch.zeros(40)
    for seed in range(300):
        s = C.growth_scores("random", weight=torch.zeros(40), generator=_g(seed))
        grown = C.grow(s, ~mask, 6, _g(seed))
        assert int(grown.sum()) == 6 and not bool((grown & mask).any())
        hits += grown.float()
    assert bool((hits[10:] > 0).all())  # every empty position gets picked sometimes
    assert hits[10:].mean() == pytest.approx(300 * 6 / 30)
    assert float(hits[10:].std()) < 0.3 * float(hits[10:].mean())


def test_random_unfired_growth_prefers_never_fired_positions():
    mask = torch.zeros(12, dtype=torch.bool)
    mask[:4] = True
    fired = mask.clone()
    fired[4:9] = True  # 4..8 fired before, 9..11 never
    for seed in range(5):
        s = C.growth_scores("random_unfired", weight=torch.zeros(12), generator=_g(seed),
                            fired=fired)  # fmt: skip
        assert _idx(C.grow(s, ~mask, 3, _g(seed))) == [9, 10, 11]
        more = C.grow(s, ~mask, 5, _g(seed))  # the 3 unfired plus 2 random fired ones
        assert set(_idx(more)) >= {9, 10, 11} and int(more.sum()) == 5


def test_rewire_keeps_counts_and_regrows_just_dropped_ones():
    w = torch.tensor([5.0, 4.0, 0.01, 3.0, 0.0, 0.0])
    mask = torch.tensor([True, True, True, True, False, False])
    grad = torch.tensor([0.0, 0.0, 10.0, 0.0, 1.0, 0.5])  # the dropped 0.01 has the top |g|
    new, conn = C.rewire(w, mask, 1, _g(), growth="gradient", grad=grad)
    assert torch.equal(new, mask) and not bool(conn.any())  # regrown in place: not new
    new, conn = C.rewire(w, mask, 1, _g(), growth="gradient", grad=grad, reinit_when_same=True)
    assert torch.equal(new, mask) and _idx(conn) == [2]  # reinit_when_same: reset it
    grad = torch.tensor([0.0, 0.0, 0.5, 0.0, 1.0, 0.7])
    new, conn = C.rewire(w, mask, 2, _g(), growth="gradient", grad=grad)
    # Drop 0.01 and 3.0; grow the top |g| among {2, 3, 4, 5}: 4 (1.0) and 5 (0.7).
    assert _idx(new) == [0, 1, 4, 5] and _idx(conn) == [4, 5]
    with pytest.raises(UnknownNameError):
        C.rewire(w, mask, 1, _g(), drop="largest")


@pytest.mark.parametrize("growth", ["gradient", "random", "random_unfired", "momentum"])
@pytest.mark.parametrize("reinit", [False, True])
def test_rewire_pending_is_rewire_when_its_check_is_clear(growth, reinit):
    """Same masks, resets and generator use as rewire, with no read from the device; when the
    check is set (a tie that needs a draw) the caller re-runs rewire."""
    clear = flagged = 0
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(9, 11, generator=g)
        if seed % 3 == 0:  # many ties in |w| and in the growth scores
            w = torch.round(w * 2) / 2
        mask = C.random_masks({"w": (9, 11)}, {"w": 30}, g)["w"]
        grad = torch.randn(9, 11, generator=g)
        if seed % 3 == 0:
            grad = torch.round(grad)
        fired = mask | (torch.rand(9, 11, generator=g) < 0.2)
        kw = dict(growth=growth, grad=grad, momentum=grad * 0.9, fired=fired,
                  reinit_when_same=reinit)  # fmt: skip
        a, b = _g(seed), _g(seed)
        new, conn = C.rewire(w, mask, 7, a, **kw)
        p_new, p_conn, check = C.rewire_pending(w, mask, 7, 30, b, **kw)
        assert check.shape == () and check.dtype == torch.bool
        if bool(check):
            flagged += 1
            continue
        clear += 1
        assert torch.equal(new, p_new) and torch.equal(conn, p_conn)
        assert torch.equal(a.get_state(), b.get_state())
    assert clear and flagged  # both cases seen


def test_rewire_pending_leaves_count_reading_drop_rules_to_rewire():
    w, mask = torch.randn(4, 4), torch.rand(4, 4) < 0.5
    n = int(mask.sum())
    assert C.rewire_pending(w, mask, 1, n, _g(), drop="set") is None
    with pytest.raises(MaskValidationError, match="cannot drop 3 of 2"):
        C.rewire_pending(w, mask, 3, 2, _g())


def test_start_masks_have_exact_erk_counts():
    net = get_model("resnet20", generator=_g())
    params = maskable_parameters(net)
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    masks = C.start_masks(params, 0.05, "erk", _g(3))
    want = layer_counts(shapes, layer_densities(shapes, 0.05, "erk"))
    assert {n: int(m.sum()) for n, m in masks.items()} == want
    total = sum(p.numel() for p in params.values())
    assert sum(want.values()) == round(0.05 * total)
    dens = layer_densities(shapes, 0.05, "erk")
    for n, m in masks.items():  # each layer floor or ceil of d_l N_l
        assert abs(int(m.sum()) - dens[n] * m.numel()) < 1
    assert not torch.equal(
        masks[next(iter(masks))], C.start_masks(params, 0.05, "erk", _g(4))[next(iter(masks))]
    )
    ones = C.start_masks(params, 1.0, "erk", _g())
    assert all(bool(m.all()) for m in ones.values())
    with pytest.raises(MaskValidationError, match="no maskable"):
        C.start_masks({}, 0.5, "erk", _g())


def test_random_masks_exact_counts_and_bad_counts():
    masks = C.random_masks({"a": (3, 4), "b": (2, 2, 3, 3)}, {"a": 5, "b": 36}, _g())
    assert int(masks["a"].sum()) == 5 and bool(masks["b"].all())
    with pytest.raises(MaskValidationError, match="cannot keep 13"):
        C.random_masks({"a": (3, 4)}, {"a": 13}, _g())


def test_itop_rate_is_the_union_over_all_entries():
    fired = {"a": torch.tensor([True, False, True, False]), "b": torch.ones(2, 3, dtype=torch.bool)}
    assert C.itop_rate(fired) == pytest.approx(8 / 10)
    assert C.itop_rate({}) == 1.0


def test_prune_targets_global_and_layer():
    sizes, active = {"a": 100, "b": 300}, {"a": 100, "b": 300}
    assert C.prune_targets(sizes, active, 0.25, scope="global") == 100
    assert C.prune_targets(sizes, active, 0.25, scope="layer") == {"a": 25, "b": 75}
    # Sparse start: each layer scales its start density by d / d_i.
    start = {"a": 0.8, "b": 0.4}
    active = {"a": 80, "b": 120}
    k = C.prune_targets(sizes, active, 0.1, scope="layer", start_densities=start, d_init=0.5)
    assert k == {"a": 16, "b": 24} and sum(k.values()) == round(0.1 * 400)
    # Never more than the active count (pruned weights do not come back).
    assert C.prune_targets(sizes, {"a": 10, "b": 20}, 0.5, scope="global") == 30
    with pytest.raises(UnknownNameError):
        C.prune_targets(sizes, active, 0.1, scope="both")


def test_prune_magnitude_global_pools_layers_and_never_revives():
    w = {"a": torch.tensor([0.5, -3.0, 0.2, 0.9]), "b": torch.tensor([[1.0, -0.1], [2.0, 0.3]])}
    m = {"a": torch.tensor([True, False, True, True]), "b": torch.ones(2, 2, dtype=torch.bool)}
    out = C.prune_magnitude(w, m, 3, _g())
    # -3.0 is inactive: the top-3 active |w| pooled are 2.0, 1.0, 0.9.
    assert _idx(out["a"]) == [3] and _idx(out["b"]) == [0, 2]
    out = C.prune_magnitude(w, m, {"a": 2, "b": 1}, _g())
    assert _idx(out["a"]) == [0, 3] and _idx(out["b"]) == [2]
