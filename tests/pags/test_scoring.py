"""Batched PAGS scoring agrees with the analysis metrics, one candidate at a time."""

import math

import numpy as np
import pytest
import torch
from _stubs import NoisyMagnitude, base_mask, theta

from masktopo.analysis import analyze
from masktopo.analysis.metrics import layer_metric_rows, layer_metrics
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.pags.scoring import quantize, score_candidates


@pytest.fixture(scope="module")
def setup():
    w = theta(0)
    cands = [NoisyMagnitude(w, 0.3, seed=3)(t) for t in range(1, 6)]
    return w, cands


def test_fs_matches_full_spectrum_norm_of_analyze(setup):
    w, cands = setup
    sc = score_candidates(cands, weights=w)
    assert sc.fs.shape == (5, 3) and sc.coords.shape == (5, 3, 4)
    for i, ms in enumerate(cands):
        df = analyze(ms.with_weights(w))
        np.testing.assert_allclose(sc.fs[i], df["full_spectrum_norm"], rtol=1e-7)
        imdb = df["imdb_ramanujan_gap"].astype(float).fillna(0.0).to_numpy()
        np.testing.assert_allclose(sc.imdb()[i], imdb, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sc.network(), sc.fs.mean(axis=1), rtol=1e-7)


def test_batched_equals_one_by_one(setup):
    w, cands = setup
    together = score_candidates(cands, weights=w)
    for i, ms in enumerate(cands):
        alone = score_candidates([ms], weights=w)
        np.testing.assert_allclose(alone.coords[0], together.coords[i], rtol=1e-9, atol=1e-12)


def test_reference_base_gives_zero_distance_for_the_base(setup):
    w, _ = setup
    base = base_mask(w, 0.3)
    s0 = score_candidates([base], weights=w)
    s1 = score_candidates([base], weights=w, reference=s0.coords[0])
    assert np.all(s1.fs == 0) and np.all(s0.fs > 0)


def test_invalid_skip_and_empty_layers():
    g = torch.Generator().manual_seed(0)
    w = {"a.weight": torch.randn(20, 20, generator=g), "b.weight": torch.randn(6, 5, generator=g)}
    sparse = torch.zeros(6, 5, dtype=torch.bool)
    sparse[0, 0] = True  # fails the gate: mean fan-in 1
    from masktopo.masks import MaskSet

    cand = MaskSet({"a.weight": torch.rand(20, 20, generator=g) < 0.5, "b.weight": sparse})
    empty = MaskSet({"a.weight": torch.rand(20, 20, generator=g) < 0.5,
                     "b.weight": torch.zeros(6, 5, dtype=torch.bool)})  # fmt: skip
    sc = score_candidates([cand, empty], weights=w)
    assert not sc.valid[0, 1] and sc.fs[0, 1] == 0 and sc.fs[1, 1] == 0
    assert math.isnan(sc.fs_criterion("skip")[0, 1])
    np.testing.assert_allclose(sc.network("skip"), sc.fs[:, 0], rtol=1e-7)
    np.testing.assert_allclose(sc.network("zero"), sc.fs.mean(axis=1), rtol=1e-7)
    with pytest.raises(UnknownNameError, match="known: skip, zero"):
        sc.network("drop")


def test_errors():
    with pytest.raises(MaskValidationError, match="at least one"):
        score_candidates([], weights={})
    from masktopo.masks import MaskSet

    ms = MaskSet({"a.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(MaskValidationError, match="no weights"):
        score_candidates([ms])


@pytest.mark.parametrize("score", ["score", "rank"])
def test_bad_theta_and_candidates_are_errors_not_silent_scores(score):
    # θ of another shape scored every candidate 0 (valid False), NaN in θ gave finite scores,
    # a dict candidate was scored, a MaskSet passed alone failed deep inside
    from masktopo.masks import MaskSet
    from masktopo.pags.scoring import rank_candidates

    fn = score_candidates if score == "score" else rank_candidates
    g = torch.Generator().manual_seed(0)
    ms = MaskSet(
        {"a": torch.rand(6, 5, generator=g) > 0.4, "b": torch.rand(4, 6, generator=g) > 0.5}
    )
    w = {"a": torch.randn(6, 5, generator=g), "b": torch.randn(4, 6, generator=g)}
    fn([ms], weights=w)  # fine
    cases = [
        ({**w, "a": torch.randn(5, 6)}, [ms], r"layer 'a': weight shape \(5, 6\) does not match"),
        ({**w, "b": w["b"] * float("nan")}, [ms], "layer 'b': weight has 24 NaN"),
        ({**w, "a": w["a"].numpy()}, [ms], "layer 'a': weight is a ndarray, not a tensor"),
        (w, ms, "takes a sequence of MaskSets"),
        (w, [dict(ms)], "candidate 0 is a dict, not a MaskSet"),
        (w, [ms, MaskSet({"a": ms["a"], "b": torch.ones(4, 7, dtype=torch.bool)})],
         "candidate 1 has other layer shapes"),
    ]  # fmt: skip
    for weights, cands, message in cases:
        with pytest.raises(MaskValidationError, match=message):
            fn(cands, weights=weights)
    if score == "rank":
        for steps in (0, -3, 2.5):
            with pytest.raises(MaskValidationError, match=r"steps .* must be an integer >= 1"):
                rank_candidates([ms], weights=w, steps=steps)


def test_layer_metric_rows_equals_layer_metrics():
    g = torch.Generator().manual_seed(5)
    layers = [(f"l{i}", torch.rand(12, 9, generator=g) < 0.4, torch.randn(12, 9, generator=g))
              for i in range(3)]  # fmt: skip
    rows = layer_metric_rows(layers, metrics=["mu_hat", "full_spectrum_norm"])
    for (_, m, w), row in zip(layers, rows, strict=True):
        one = layer_metrics(m, w, metrics=["mu_hat", "full_spectrum_norm"])
        assert row["mu_hat"] == pytest.approx(one["mu_hat"], rel=1e-12)
        assert row["full_spectrum_norm"] == pytest.approx(one["full_spectrum_norm"], rel=1e-12)
    with pytest.raises(MaskValidationError, match="every layer or for none"):
        layer_metric_rows([layers[0], ("x", layers[1][1], None)])


def test_quantize_rounds_to_27_bits():
    x = np.array([1.0, 1.0 + 2.0**-40, -3.5, 0.0, np.nan])
    q = quantize(x)
    assert q[0] == q[1] == 1.0 and q[2] == -3.5 and q[3] == 0.0 and np.isnan(q[4])
    assert abs(quantize(np.array([math.pi]))[0] - math.pi) < 2.0**-26 * math.pi
