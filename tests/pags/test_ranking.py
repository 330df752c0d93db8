"""Ranking then exact (the default) selects exactly what the all-exact path (--exact) selects.

The ranking pass bounds every candidate layer's criteria from a few Lanczos steps; only the
layers whose upper bounds can still beat the best are computed exactly. These tests check the
bounds against the exact values, and whole PAGS runs in both modes against each other.
"""

import json

import numpy as np
import pytest
import torch
from _stubs import NoisyMagnitude, base_mask, global_topk

from masktopo.analysis import ranking as ranking_module
from masktopo.analysis.metrics import Options, layer_metric_rows
from masktopo.analysis.ranking import COORDINATES, rank_layers
from masktopo.masks import MaskSet
from masktopo.pags import PagsConfig, RewireSource, run, run_pags

# Sides above 24 (the dense route's limit): these go through the bounded Lanczos pass.
SHAPES = {"conv.weight": (40, 8, 3, 3), "fc1.weight": (64, 288), "fc2.weight": (30, 64)}
DENSITY = 0.08


def _theta(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * 0.2 for n, s in SHAPES.items()}


def _random_layers(seed: int, count: int) -> list:
    """Layers of assorted shapes and densities, some disconnected or nearly empty."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        m = int(torch.randint(20, 90, (1,), generator=g))
        n = int(torch.randint(20, 200, (1,), generator=g))
        shape = (m, n // 9 + 1, 3, 3) if i % 3 == 0 else (m, n)
        d = float(torch.empty(1).uniform_(0.01, 0.3, generator=g))
        mask = torch.rand(shape, generator=g) < d
        if i % 5 == 0:  # two blocks: a disconnected layer
            flat = mask.reshape(shape[0], -1)
            flat[: shape[0] // 2, flat.shape[1] // 2 :] = False
            flat[shape[0] // 2 :, : flat.shape[1] // 2] = False
        out.append((f"l{i}", mask, torch.randn(shape, generator=g)))
    return out


@pytest.mark.parametrize(
    "options",
    [Options(allow_empty=True), Options("rolled", "i23", "i23", allow_empty=True)],
    ids=["unrolled-n23", "rolled-i23"],
)
@pytest.mark.parametrize("steps", [4, 16])
def test_bounds_contain_the_exact_values(options, steps):
    layers = _random_layers(3, 30)
    rb = rank_layers(layers, options=options, steps=steps)
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=options)
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    assert np.array_equal(np.isnan(exact), np.isnan(rb.upper))  # definedness is structural
    assert np.array_equal(np.isnan(exact), np.isnan(rb.lower))
    assert np.all(np.nan_to_num(rb.lower, nan=0) <= np.nan_to_num(exact, nan=0))
    assert np.all(np.nan_to_num(exact, nan=0) <= np.nan_to_num(rb.upper, nan=0))
    assert rb.n_edges.tolist() == [r["n_edges"] for r in rows]
    # The exact pass from the same plans is the analysis's value, bit for bit.
    assert np.array_equal(rb.exact(range(len(layers))), exact, equal_nan=True)
    # The bounds are tight enough to decide something: the IMDB upper bound is close.
    defined = ~np.isnan(exact[:, 2])
    assert defined.sum() >= 5
    assert np.median((rb.upper - exact)[defined, 2]) < 0.05 * np.median(np.abs(exact[defined, 2]))
    assert rb.steps > 0


@pytest.mark.parametrize(
    "options",
    [Options(allow_empty=True), Options("rolled", "i23", "i23", allow_empty=True)],
    ids=["unrolled-n23", "rolled-i23"],
)
def test_imdb_bounds_keep_the_imdb_bound_and_the_estimates(options):
    """``bounds="imdb"`` (what the layerwise rule ranks with) swaps the Collatz–Wielandt pass
    for the looser ``σ₁ ≤ √(‖B‖₁‖B‖∞)``: the estimates are the same bits, the IMDB upper bound
    the same up to its safety margin, every bound still contains the exact value, and the other
    upper bounds are looser."""
    layers = _random_layers(8, 30)
    full = rank_layers(layers, options=options, bounds="all")
    cheap = rank_layers(layers, options=options, bounds="imdb")
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=options)
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    assert np.array_equal(cheap.estimate, full.estimate, equal_nan=True)
    # The IMDB upper bound: the same Ritz values, widened by a margin relative to σ₁'s bound.
    assert np.array_equal(np.isnan(cheap.upper[:, 2]), np.isnan(full.upper[:, 2]))
    assert np.all(np.nan_to_num(cheap.upper[:, 2] - full.upper[:, 2], nan=0) >= 0)
    np.testing.assert_allclose(cheap.upper[:, 2], full.upper[:, 2], rtol=1e-6, atol=1e-6)
    assert np.all(np.nan_to_num(cheap.lower, nan=0) <= np.nan_to_num(exact, nan=0))
    assert np.all(np.nan_to_num(exact, nan=0) <= np.nan_to_num(cheap.upper, nan=0))
    looser = np.nan_to_num(cheap.upper[:, 1] - full.upper[:, 1], nan=0)
    assert np.all(looser >= 0) and np.any(looser > 0)
    assert np.array_equal(cheap.exact(range(len(layers))), exact, equal_nan=True)
    with pytest.raises(ValueError, match="bounds must be one of"):
        rank_layers(layers, bounds="tight")


@pytest.mark.parametrize("bounds", ["all", "imdb"])
def test_fused_layer_kernel_equals_the_packed_batch(monkeypatch, bounds):
    """Unit-valued layers go through ``_kernels.rank_layer`` (planning and bounds in one call,
    nothing concatenated): the same bits as planning them and packing every matrix into
    ``top2_bounds_batch``, and the same exact values from the plans made later."""
    layers = _random_layers(9, 30)
    fused = rank_layers(layers, bounds=bounds)
    assert any(isinstance(p, ranking_module._FusedPlan) for p in fused._plans)
    monkeypatch.setattr(ranking_module, "_fusable", lambda raw, selection: False)
    packed = rank_layers(layers, bounds=bounds)
    assert not any(isinstance(p, ranking_module._FusedPlan) for p in packed._plans)
    for field in ("lower", "upper", "estimate", "n_edges"):
        assert np.array_equal(getattr(fused, field), getattr(packed, field), equal_nan=True)
    assert fused.steps == packed.steps
    index = list(range(0, len(layers), 3))
    assert np.array_equal(fused.exact(index), packed.exact(index), equal_nan=True)


@pytest.mark.parametrize("workers", ["2", "3", "4"])
def test_ranking_split_over_threads_is_bit_identical(monkeypatch, workers):
    """The ranking pass and the exact pass split over the analysis's threads (outside the PAGS
    loop, which runs them alone): every bound, estimate and exact row as in one thread."""
    from masktopo.analysis import spectral

    layers = _random_layers(11, 30)
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    one = rank_layers(layers)
    one_exact = one.exact(range(len(layers)))
    monkeypatch.setenv("MASKTOPO_WORKERS", workers)
    monkeypatch.setattr(spectral, "_PARALLEL_MIN_NNZ", 0)
    calls = []
    real = spectral.in_threads
    monkeypatch.setattr(ranking_module, "in_threads",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    many = rank_layers(layers)
    for field in ("lower", "upper", "estimate", "n_edges", "valid"):
        assert np.array_equal(getattr(one, field), getattr(many, field), equal_nan=True), field
    assert one.steps == many.steps
    assert np.array_equal(many.exact(range(len(layers))), one_exact, equal_nan=True)
    assert len(calls) == 2  # the ranking pass and the exact pass were split


@pytest.mark.parametrize("steps", [3, 12])
def test_batched_route_bounds_contain_the_exact_values(steps):
    """The batched (CUDA) route's ranking pass, run on the CPU."""
    layers = _random_layers(4, 24)
    opts = Options(allow_empty=True)
    rb = rank_layers(layers, options=opts, steps=steps, route="batched")
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=opts,
                             route="batched")  # fmt: skip
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    assert np.array_equal(np.isnan(exact), np.isnan(rb.upper))
    assert np.all(np.nan_to_num(rb.lower, nan=0) <= np.nan_to_num(exact, nan=0))
    assert np.all(np.nan_to_num(exact, nan=0) <= np.nan_to_num(rb.upper, nan=0))
    np.testing.assert_allclose(rb.exact(range(len(layers))), exact, rtol=0, atol=1e-12)
    if steps >= 12:  # tight enough to decide something
        defined = ~np.isnan(exact[:, 2])
        gap = np.median((rb.upper - exact)[defined, 2]) / np.median(np.abs(exact[defined, 2]))
        assert gap < 0.05


def _pair(w, base, source, **kw):
    out = {}
    for exact in (False, True):
        cfg = PagsConfig(**{"n": 48, "chunk": 12, "snapshot_every": 8, **kw, "exact": exact})
        out[exact] = run_pags(base, w, source, cfg)
    return out[False], out[True]


def _same_selection(a, b):
    """``a`` ranked then exact, ``b`` all exact: the same selection, and the rows say which of
    their values are exact."""
    _same_best(a, b)
    ra, rb = a.candidates, b.candidates
    assert b.exact_layers == len(rb) * len(a.best) - len(a.best)  # --exact: every layer
    # The rows: exact values for the accepted layers (estimates elsewhere), and they say so.
    assert rb["exact_layers"].tolist() == [len(a.best)] * len(rb)
    assert ra["exact_layers"].tolist() == [len(a.best), *ra["accepted_layers"].tolist()[1:]]
    for (_, x), (_, y) in zip(ra.iterrows(), rb.iterrows(), strict=True):
        if x["accepted_layers"]:
            acc = [i for i, (p, q) in enumerate(zip(x["fs"], y["fs"], strict=True)) if p == q]
            assert len(acc) >= x["accepted_layers"]


def _same_best(a, b):
    assert list(a.best) == list(b.best)
    for name in a.best:  # same best mask
        assert torch.equal(a.best[name], b.best[name]), name
    ra, rb = a.candidates, b.candidates
    assert ra["accepted_layers"].tolist() == rb["accepted_layers"].tolist()
    assert ra["best_network_score"].tolist() == rb["best_network_score"].tolist()
    assert a.snapshots == b.snapshots
    np.testing.assert_allclose(a.best_scores.coords, b.best_scores.coords, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.best_scores.fs, b.best_scores.fs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("selection", ["layerwise", "global"])
def test_ranking_then_exact_selects_what_exact_selects(seed, selection):
    w = _theta(seed)
    base = base_mask(w, DENSITY)
    a, b = _pair(w, base, NoisyMagnitude(w, DENSITY, seed, noise=0.15), seed=seed,
                 selection=selection)  # fmt: skip
    _same_selection(a, b)
    if selection == "layerwise":  # something was selected, and the ranking spared exact work
        assert a.candidates["accepted_layers"].sum() > 0
        assert a.exact_layers < 48 * len(SHAPES)


@pytest.mark.parametrize("seed", [1, 2])
def test_same_selection_on_the_batched_route(seed):
    w = _theta(seed)
    base = base_mask(w, DENSITY)
    a, b = _pair(w, base, NoisyMagnitude(w, DENSITY, seed, noise=0.15), seed=seed,
                 route="batched")  # fmt: skip
    _same_selection(a, b)
    assert a.candidates["accepted_layers"].sum() > 0
    assert a.exact_layers < 48 * len(SHAPES)


@pytest.mark.parametrize("reference", ["origin", "base"])
@pytest.mark.parametrize("invalid", ["zero", "skip"])
def test_same_selection_for_reference_and_invalid_rules(reference, invalid):
    w = _theta(5)
    base = base_mask(w, DENSITY)
    a, b = _pair(w, base, RewireSource(base, 5), seed=5, sampler="rewire", reference=reference,
                 invalid=invalid)  # fmt: skip
    _same_selection(a, b)


def test_sparse_gated_layers():
    """At a low density most layers fail the gate (their criteria count as 0 or are skipped)."""
    w = _theta(7)
    base = global_topk({n: v.abs() for n, v in w.items()}, 0.03)
    a, b = _pair(w, base, RewireSource(base, 7), seed=7, sampler="rewire", invalid="skip")
    _same_selection(a, b)


@pytest.mark.parametrize("seed", [1, 4])
def test_erk_on_a_zoo_model(tmp_path, seed):
    """What ``masktopo pags --method erk`` runs, on LeNet-300-100 (no data is read)."""
    res = {}
    for exact in (False, True):
        cfg = PagsConfig(model="lenet300", dataset="mnist", method="erk", density=0.05, n=40,
                         chunk=16, seed=seed, exact=exact)  # fmt: skip
        res[exact] = run(cfg, tmp_path / f"o{exact}")
    _same_selection(res[False], res[True])
    assert res[False].exact_layers < 40 * 3


def test_exact_is_an_option():
    assert PagsConfig().exact is False
    assert PagsConfig(exact=True).to_dict()["exact"] is True
    ms = MaskSet({"a": torch.ones(3, 3, dtype=torch.bool)})
    assert list(ms) == ["a"]


@pytest.mark.parametrize("method", ["random", "erk", "er", "uniform"])
@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_drawn_positions_are_the_masks_pai_prune_draws(method, model):
    """Candidates of a random method drawn as positions (issue 20, part 1) are exactly the masks
    masktopo.pai.prune draws from the same generator state (layer-wise and global scopes)."""
    from masktopo import pai
    from masktopo.pags.sampling import random_draw
    from masktopo.zoo import get_model

    net = get_model(model, dataset="fashion-mnist")
    kw = {"in_shape": (1, 28, 28)}
    base = pai.prune(net, method, 0.05, generator=torch.Generator().manual_seed(0), **kw)
    draw = random_draw(base, method)
    assert draw is not None
    for seed in (1, 2, 3):
        got = draw(torch.Generator().manual_seed(seed))
        want = pai.prune(net, method, 0.05, generator=torch.Generator().manual_seed(seed), **kw)
        assert list(got) == list(want.names)
        for name in want.names:
            assert torch.equal(got[name], want[name]), (method, seed, name)
            assert np.array_equal(got.positions(name),
                                  np.flatnonzero(want[name].reshape(-1).numpy()))  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [Options(allow_empty=True), Options("rolled", "i23", "i23", allow_empty=True)],
    ids=["unrolled-n23", "rolled-i23"],
)
def test_lean_ranking_bounds_the_imdb_criterion_alone(options):
    """``estimates=False`` (what ``masktopo pags`` ranks with by default): the IMDB columns are
    the same bits as with every estimate, the others are not computed (NaN), the gate is still
    known, the exact pass gathers the weights it needs and gives the analysis's values, and the
    pass takes fewer Lanczos steps."""
    layers = _random_layers(11, 30)
    full = rank_layers(layers, options=options, bounds="imdb")
    lean = rank_layers(layers, options=options, bounds="imdb", estimates=False)
    assert full.estimated and not lean.estimated
    for field in ("lower", "upper", "estimate"):
        a, b = getattr(full, field), getattr(lean, field)
        assert np.array_equal(a[:, 2], b[:, 2], equal_nan=True), field
        assert np.isnan(b[:, [0, 1, 3]]).all(), field
    assert np.array_equal(lean.valid, ~np.isnan(full.estimate[:, 0]))
    assert np.array_equal(full.valid, lean.valid) and lean.valid.any() and not lean.valid.all()
    assert np.array_equal(lean.n_edges, full.n_edges)
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=options)
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    assert np.array_equal(lean.exact(range(len(layers))), exact, equal_nan=True)
    assert lean.steps < full.steps  # only the groups' binary matrices run (fused or not)
    with pytest.raises(ValueError, match="bounds='imdb'"):
        rank_layers(layers, bounds="all", estimates=False)


@pytest.mark.parametrize(
    "options",
    [Options(allow_empty=True), Options("rolled", "i23", "i23", allow_empty=True)],
    ids=["unrolled-n23", "rolled-i23"],
)
def test_a_floor_keeps_the_layers_that_reach_it(options, monkeypatch):
    """``floor`` (what PAGS ranks with): groups get FIRST_STEPS steps, and only the layers whose
    IMDB bound then reaches their floor go on to ``steps`` (resumed: the recurrence of the run
    without a floor, so its bounds to rounding). The layers whose bound reaches the floor are
    those of the run without one; the others keep a looser but still rigorous bound below the
    floor; the estimates are the short pass's, bit for bit, whatever the floors; no floor (NaN)
    and an unreachable one (+∞) are the two extremes. Layers that are not unit-valued (convs
    read rolled) are not ranked by the fused kernel: a floor changes nothing for them."""
    monkeypatch.setattr(ranking_module, "FIRST_STEPS", 4)
    layers = _random_layers(12, 40)
    kw = {"options": options, "bounds": "imdb", "estimates": False}
    tight = rank_layers(layers, steps=16, **kw)
    short = rank_layers(layers, steps=4, **kw)
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=options)
    exact = np.array([r["imdb_ramanujan_gap"] for r in rows], dtype=np.float64)
    fused = np.array([isinstance(p, ranking_module._FusedPlan) for p in tight._plans])
    assert fused.sum() >= 10 and (options.conv == "unrolled") == fused.all()
    defined = ~np.isnan(exact) & fused
    assert defined.sum() >= 8
    n = len(layers)

    def check(got, want_fused: dict, close: dict = {}) -> None:  # noqa: B006
        for field in ("lower", "upper", "estimate"):
            a, b = getattr(got, field), getattr(tight, field)
            assert np.array_equal(a[~fused], b[~fused], equal_nan=True), field
        for field, want in want_fused.items():
            assert np.array_equal(getattr(got, field)[fused], want[fused], equal_nan=True), field
        for field, want in close.items():  # a resumed run: the single run's bounds to rounding
            np.testing.assert_allclose(getattr(got, field)[fused], want[fused], rtol=1e-10,
                                       atol=1e-12, err_msg=field)  # fmt: skip

    nan = rank_layers(layers, steps=16, floor=np.full(n, np.nan), **kw)
    check(nan, {"estimate": short.estimate}, {"lower": tight.lower, "upper": tight.upper})
    assert not np.array_equal(nan.upper[fused], short.upper[fused], equal_nan=True)
    never = rank_layers(layers, steps=16, floor=np.full(n, np.inf), **kw)
    check(never, {"upper": short.upper, "estimate": short.estimate})
    assert short.steps <= never.steps < tight.steps
    # floors at the exact value, between the short and the tight bound, and above the short one
    hi_s, hi_t = short.upper[:, 2], tight.upper[:, 2]
    assert np.nanmax((hi_s - hi_t)[fused]) > 0  # the short pass is looser somewhere
    floor = np.where(defined, (hi_s + hi_t) / 2, np.nan)
    floor[::3] = np.where(defined, exact, np.nan)[::3]
    floor[2::3] = hi_s[2::3] + 0.1 * np.abs(hi_s[2::3]) + 0.01
    got = rank_layers(layers, steps=16, floor=floor, **kw)
    check(got, {"estimate": short.estimate})
    with np.errstate(invalid="ignore"):
        assert np.array_equal(got.upper[:, 2] >= floor, hi_t >= floor)
        reach = hi_t >= floor
    assert reach.any() and (~reach & defined).any()
    np.testing.assert_allclose(got.upper[reach, 2], hi_t[reach], rtol=1e-10, atol=1e-12)
    assert np.array_equal(got.upper[reach, 2], nan.upper[reach, 2])  # the same resumed runs
    ok = ~np.isnan(exact)
    assert np.all(got.upper[ok, 2] >= exact[ok])  # still an upper bound
    # a resumed run may stop a step apart from the single run (its convergence checks differ)
    assert (
        never.steps < got.steps < nan.steps and abs(nan.steps - tight.steps) <= 0.02 * tight.steps
    )
    assert np.array_equal(got.exact(range(n))[:, 2], exact, equal_nan=True)
    with pytest.raises(ValueError, match="floor has 3 values for 40 layers"):
        rank_layers(layers, floor=np.zeros(3), **kw)


def test_rank_candidates_takes_a_floor_per_layer():
    """``rank_candidates(floor=)``: one value per layer, the same for every candidate."""
    from masktopo.pags.scoring import rank_candidates

    w = _theta(3)
    src = NoisyMagnitude(w, DENSITY, 3, noise=0.15)
    cands = [src(t) for t in range(1, 5)]
    kw = {"weights": w, "bounds": "imdb", "estimates": False}
    free = rank_candidates(cands, **kw)
    short = rank_candidates(cands, steps=ranking_module.FIRST_STEPS, **kw)
    never = rank_candidates(cands, floor=np.full(len(SHAPES), np.inf), **kw)
    assert np.array_equal(never.upper.imdb(), short.upper.imdb())
    assert np.array_equal(never.estimate.imdb(), short.estimate.imdb())
    one = np.array([np.inf, np.nan, np.inf])  # only the second layer without a floor
    mixed = rank_candidates(cands, floor=one, **kw)
    assert np.array_equal(mixed.upper.imdb()[:, 1], free.upper.imdb()[:, 1])
    assert np.array_equal(mixed.upper.imdb()[:, [0, 2]], short.upper.imdb()[:, [0, 2]])
    with pytest.raises(ValueError, match="floor has 2 values for 3 layers"):
        rank_candidates(cands, floor=np.zeros(2), **kw)


@pytest.mark.parametrize(
    "options",
    [Options(allow_empty=True), Options("rolled", "i23", "i23", allow_empty=True)],
    ids=["unrolled-n23", "rolled-i23"],
)
def test_screened_exact_pass_finishes_what_the_screen_keeps(options):
    """``exact_screened``: the screen sees rigorous bounds of every coordinate entry twice:
    first for every layer with ``Δr`` exact to the margin, then for the layers it kept with
    ``IMDB_Δr`` exact too; the layers it keeps both times get the exact values bit for bit,
    the others NaN and ``finished`` False."""
    layers = _random_layers(14, 36)
    rb = rank_layers(layers, options=options, bounds="imdb", estimates=False)
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=options)
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    index = list(range(1, len(layers)))  # not all: the screen gets the layer indices
    calls = []

    def screen(i, lower, upper):
        calls.append((np.array(i), lower.copy(), upper.copy()))
        return (i % 3 != 0) if len(calls) == 1 else (i % 4 != 0)

    got, finished = rb.exact_screened(index, screen)
    assert len(calls) == 2
    first, second = calls
    assert np.array_equal(first[0], index)
    assert np.array_equal(second[0], [i for i in index if i % 3 != 0])
    for (i, lo, hi), exact_cols in ((first, (0,)), (second, (0, 2))):
        want = exact[i]
        assert np.array_equal(np.isnan(lo), np.isnan(want))
        assert np.array_equal(np.isnan(hi), np.isnan(want))
        assert np.all(np.nan_to_num(lo) <= np.nan_to_num(want))
        assert np.all(np.nan_to_num(want) <= np.nan_to_num(hi))
        for col in exact_cols:  # exact up to the margin
            np.testing.assert_allclose(hi[:, col], want[:, col], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(lo[:, col], want[:, col], rtol=1e-6, atol=1e-6)
        assert np.nanmax(hi[:, 1] - want[:, 1]) > 1e-6  # λ only bounded
    assert np.nanmax(first[2][:, 2] - exact[first[0], 2]) > 1e-6  # IMDB_Δr bounded at first
    done = (np.array(index) % 3 != 0) & (np.array(index) % 4 != 0)
    assert np.array_equal(finished, done) and done.any() and not done.all()
    want = exact[index]
    assert np.array_equal(got[finished], want[finished], equal_nan=True)
    assert np.isnan(got[~finished]).all()
    every, done = rb.exact_screened(index, lambda i, lo, hi: np.ones(len(i), dtype=bool))
    assert done.all() and np.array_equal(every, want, equal_nan=True)
    assert np.array_equal(rb.exact(index), want, equal_nan=True)


def test_exact_with_a_floor_drops_only_layers_below_it():
    """``Ranking.exact(floor=)``: a layer is left unfinished only where its exact IMDB_Δr or
    its fs bound is below the floor, so its exact criteria are below it too; unfinished layers
    have NaN criteria and can never be accepted; the others are the exact scores."""
    from masktopo.pags.engine import accept
    from masktopo.pags.scoring import rank_candidates, score_candidates

    w = _theta(5)
    src = NoisyMagnitude(w, DENSITY, 5, noise=0.15)
    cands = [src(t) for t in range(1, 9)]
    rk = rank_candidates(cands, weights=w, bounds="imdb", estimates=False)
    full = score_candidates(cands, weights=w)
    which = np.ones((len(cands), len(SHAPES)), dtype=bool)
    assert np.array_equal(rk.exact(which).fs, full.fs)
    # the median candidate's criteria as the floor: some layers fall below it
    f_imdb, f_fs = np.median(full.imdb(), axis=0), np.median(full.fs, axis=0)
    sc = rk.exact(which, (f_imdb, f_fs))
    dropped = np.isnan(sc.fs)
    assert dropped.any() and (~dropped).any()
    below = (full.imdb() < f_imdb) | (full.fs < f_fs)
    assert not (dropped & ~below).any()  # only layers that could not reach the floor
    assert np.array_equal(sc.fs[~dropped], full.fs[~dropped])
    assert np.array_equal(sc.coords[~dropped], full.coords[~dropped])
    best = full.take(0)
    best.fs[0], best.coords[0, :, 2] = f_fs, f_imdb
    for i in range(len(cands)):
        assert not accept(PagsConfig(), best, sc, i)[dropped[i]].any()
    nan = rk.exact(which, (np.full(len(SHAPES), np.nan), np.full(len(SHAPES), np.nan)))
    assert np.array_equal(nan.fs, full.fs)


@pytest.mark.parametrize("seed", [1, 6])
@pytest.mark.parametrize("short", [True, False], ids=["floor", "tight"])
def test_estimates_only_change_the_rows(seed, short, monkeypatch):
    """With and without ``estimates`` (and ``exact``) the selection is the same; without it a
    candidate's row has its IMDB estimates but fs only where computed, so no network score nor
    fs summary; with it every row has them. The IMDB estimates are the same values when both
    passes take the same steps (``tight``: the floor's first pass as long as the whole one);
    by default the lean pass's come from its first, shorter pass: a little higher."""
    if not short:
        monkeypatch.setattr(ranking_module, "FIRST_STEPS", ranking_module.RANK_STEPS)
    w = _theta(seed)
    base = base_mask(w, DENSITY)
    src = NoisyMagnitude(w, DENSITY, seed, noise=0.15)
    lean, exact = _pair(w, base, src, seed=seed)
    est = run_pags(base, w, src, PagsConfig(n=48, chunk=12, snapshot_every=8, seed=seed,
                                            estimates=True))  # fmt: skip
    _same_selection(est, exact)
    _same_best(lean, est)
    rl, re_ = lean.candidates, est.candidates
    if short:
        a, b = np.concatenate(rl["imdb_gap"].tolist()), np.concatenate(re_["imdb_gap"].tolist())
        assert np.array_equal(np.isnan(a), np.isnan(b))
        # fewer steps, smaller Ritz values: the σ₂ estimates are lower, the gaps higher
        assert np.nanmin(a - b) > -1e-9 and np.nanmax(a - b) < 0.15 * np.nanmax(np.abs(b))
        assert not np.array_equal(a, b, equal_nan=True)  # the short pass is seen in the rows
    else:
        assert rl["imdb_gap"].tolist() == re_["imdb_gap"].tolist()
        assert rl["imdb_mean"].tolist() == re_["imdb_mean"].tolist()
    assert np.isfinite(re_["network_score"]).all() and np.isfinite(re_["fs_mean"]).all()
    cand = rl.iloc[1:]
    assert np.isnan(cand["network_score"]).all() and np.isnan(cand["fs_mean"]).all()
    assert np.isfinite(rl["network_score"].iloc[0])  # the base: exact
    for (_, x), (_, y) in zip(cand.iterrows(), re_.iloc[1:].iterrows(), strict=True):
        known = np.isfinite(x["fs"])
        assert known.sum() == x["accepted_layers"]  # the accepted layers, exact
        assert np.array_equal(np.asarray(x["fs"])[known], np.asarray(y["fs"])[known])
    assert lean.exact_layers == est.exact_layers


def test_lean_ranking_on_the_batched_route():
    """The batched (CUDA) route ranks lean too: only the IMDB groups' binary matrices are
    bounded (the same bounds as in full, up to rounding), and they still contain the exact
    values; the exact pass is unchanged."""
    layers = _random_layers(13, 24)
    opts = Options(allow_empty=True)
    full = rank_layers(layers, options=opts, steps=12, route="batched")
    lean = rank_layers(layers, options=opts, steps=12, route="batched", bounds="imdb",
                       estimates=False)  # fmt: skip
    rows = layer_metric_rows(layers, metrics=[*COORDINATES, "n_edges"], options=opts,
                             route="batched")  # fmt: skip
    exact = np.array([[r[k] for k in COORDINATES] for r in rows], dtype=np.float64)
    assert np.isnan(lean.upper[:, [0, 1, 3]]).all()
    assert np.array_equal(np.isnan(lean.upper[:, 2]), np.isnan(exact[:, 2]))
    np.testing.assert_allclose(lean.upper[:, 2], full.upper[:, 2], rtol=1e-9, atol=1e-9)
    assert np.all(np.nan_to_num(exact[:, 2], nan=0) <= np.nan_to_num(lean.upper[:, 2], nan=0))
    assert np.all(np.nan_to_num(lean.lower[:, 2], nan=0) <= np.nan_to_num(exact[:, 2], nan=0))
    assert 0 < lean.steps < full.steps
    np.testing.assert_allclose(lean.exact(range(len(layers))), exact, rtol=0, atol=1e-12)


def test_batched_route_unpacks_only_the_matrices_it_bounds():
    """``_expand_some`` gives exactly ``_expand``'s matrices at the wanted indices (blocks of
    IMDB groups and single matrices alike), for any subset, without unpacking the others."""
    from masktopo.analysis.metrics import _expand, _plan_layer
    from masktopo.analysis.ranking import _extract_any, _names, select

    opts = Options(allow_empty=True)
    jobs = []
    for name, mask, weight in _random_layers(5, 8):
        jobs.extend(_plan_layer(_extract_any(name, mask, weight, opts), opts,
                                select(_names())).jobs)  # fmt: skip
    every = _expand(jobs)
    assert any(isinstance(j, ranking_module.Block) for j in jobs) and len(every) > len(jobs)
    rng = np.random.default_rng(0)
    for wanted in (np.arange(len(every)), np.sort(rng.choice(len(every), 7, replace=False)),
                   np.array([len(every) - 1]), np.array([], dtype=np.int64)):  # fmt: skip
        got = ranking_module._expand_some(jobs, wanted)
        assert len(got) == len(wanted)
        for g, i in zip(got, wanted.tolist(), strict=True):
            e = every[i]
            assert g.shape == e.shape
            for a, b in ((g.data, e.data), (g.indices, e.indices), (g.indptr, e.indptr)):
                assert np.array_equal(np.asarray(a), np.asarray(b))


class _KeepsOne:
    """A source whose layer ``name`` is always the base's (as a dense layer of a PaI mask is),
    the others from ``inner``; ``concurrent`` as given (the engine then draws ahead)."""

    def __init__(self, inner, base: MaskSet, name: str, concurrent: bool = False):
        self.inner, self.base, self.name, self.concurrent = inner, base, name, concurrent

    def __call__(self, t: int) -> MaskSet:
        c = self.inner(t)
        masks = {n: self.base[n] if n == self.name else c[n] for n in c}
        return MaskSet(masks, {n: c.kind(n) for n in c})


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_layer_equal_to_the_best_is_not_computed_again(monkeypatch, concurrent):
    """Its bounds always allow it (it ties the best), but its scores are the best's: the exact
    pass skips it, and the selection is still the all-exact one."""
    from masktopo.pags import scoring

    w = _theta(3)
    base = base_mask(w, DENSITY)
    source = _KeepsOne(NoisyMagnitude(w, DENSITY, 3, noise=0.15), base, "fc2.weight", concurrent)
    asked = []
    real = scoring.Ranking.exact

    def exact(self, which, floor=None):
        asked.append(np.array(which, dtype=bool))
        return real(self, which, floor)

    monkeypatch.setattr(scoring.Ranking, "exact", exact)
    a, b = _pair(w, base, source, seed=3)
    _same_selection(a, b)
    assert torch.equal(a.best["fc2.weight"], base["fc2.weight"])
    which = np.concatenate(asked)
    assert which.shape[0] == 48 and which[:, :2].any()  # the others were computed
    assert not which[:, 2].any()  # never fc2
    assert a.exact_layers == which.sum()


def test_same_result_with_one_thread_or_more(monkeypatch, tmp_path):
    """Worker threads draw and rank chunks ahead and share the exact pass: nothing about the
    run depends on them (MASKTOPO_WORKERS=1: everything in one thread, in order; 4: three
    workers, three chunks of 6 ahead)."""
    res = {}
    for workers in ("1", "2", "4"):
        monkeypatch.setenv("MASKTOPO_WORKERS", workers)
        cfg = PagsConfig(model="lenet300", dataset="mnist", method="erk", density=0.05, n=40,
                         chunk=6, seed=2)  # fmt: skip
        res[workers] = run(cfg, tmp_path / workers)
    a = res["1"]
    for b in (res["2"], res["4"]):
        _same_best(a, b)
        assert a.exact_layers == b.exact_layers
        assert json.dumps(a.rows) == json.dumps(b.rows)  # NaN written as NaN: equal where equal


def test_a_layer_equal_to_the_best_before_the_chunk_may_still_tie_the_new_best():
    """Candidate 1 re-labels fc1's outputs (an isomorphic graph: the same scores, another
    mask) and is accepted; candidate 2, in the same chunk, has the old fc1 again: it ties the
    new best and is accepted too. Its exact pass was skipped (its fingerprint is the best's
    before the chunk), so its scores must be the old best's, not estimates."""
    w = _theta(3)
    g = torch.Generator().manual_seed(0)
    w["fc1.weight"] = 0.2 * torch.sign(torch.randn(SHAPES["fc1.weight"], generator=g))
    base = base_mask(w, DENSITY)
    perm = torch.randperm(SHAPES["fc1.weight"][0], generator=g)
    relabelled = MaskSet({n: base[n][perm] if n == "fc1.weight" else base[n] for n in base})
    noisy = NoisyMagnitude(w, DENSITY, 3, noise=0.15)

    def source(t):
        return relabelled if t == 1 else base if t == 2 else noisy(t)

    a, b = _pair(w, base, source, seed=3)
    _same_selection(a, b)
    assert b.candidates["accepted_layers"].tolist()[1:3] == [1, 1]  # the case arose
