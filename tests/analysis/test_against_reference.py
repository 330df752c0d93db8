"""masktopo.analysis against the independent dense numpy reference on random masks.

Every metric of :func:`masktopo.analysis.layer_metrics` must equal ``reference.layer_metrics`` to
1e-9 relative (differences of singular values relative to the layer's largest singular value),
for linear and conv layers, conv "unrolled"/"rolled", gates "n23"/"i23", imdb "n23"/"i23" and
narc "directed"/"undirected", with and without weights, on masks with isolated nodes and with
several components.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from . import reference as ref
except ImportError:  # tests/analysis is not a package: imported from sys.path
    import reference as ref

RTOL = 1e-9
STRUCTURES = ("plain", "isolated", "disconnected", "dense_columns")


def random_mask(rng, kind, density, structure):
    """A random 0/1 mask (numpy float64) with at least one edge.

    ``structure``: "plain" (Bernoulli), "isolated" (some outputs and inputs zeroed),
    "disconnected" (two diagonal blocks over the out and in channels), "dense_columns" (some
    inputs connected to many outputs, so that the nested regular groups are large).
    """
    if kind == "linear":
        shape = (int(rng.integers(1, 41)), int(rng.integers(1, 41)))
    else:
        k = [(1, 1), (2, 2), (3, 3), (1, 3)][int(rng.integers(4))]
        shape = (int(rng.integers(1, 17)), int(rng.integers(1, 9)), *k)
    M = (rng.random(shape) < density).astype(np.float64)
    n_out, n_in = shape[:2]
    if structure == "isolated":
        M[rng.random(n_out) < 0.3] = 0
        M[:, rng.random(n_in) < 0.3] = 0
    elif structure == "disconnected" and n_out >= 2 and n_in >= 2:
        o, i = int(rng.integers(1, n_out)), int(rng.integers(1, n_in))
        M[:o, i:] = 0
        M[o:, :i] = 0
    elif structure == "dense_columns":
        cols = rng.random(n_in) < 0.4
        M[:, cols] = np.maximum(M[:, cols], rng.random(M[:, cols].shape) < 0.8)
    if M.sum() == 0:
        M[tuple(int(rng.integers(s)) for s in shape)] = 1
    return M


def random_weight(rng, shape, dtype):
    scale = float(10 ** rng.uniform(-2, 0.5))
    return (rng.normal(size=shape) * scale).astype(dtype)


def masktopo_metrics(mask, weight=None, *, device=None, on_device=None, **kw):
    """Call masktopo.analysis.layer_metrics on torch tensors made from numpy arrays."""
    from masktopo.analysis import layer_metrics

    m = torch.as_tensor(np.asarray(mask) != 0)
    w = None if weight is None else torch.as_tensor(np.asarray(weight))
    if on_device is not None:
        m = m.to(on_device)
        w = None if w is None else w.to(on_device)
    if device is not None:
        kw["device"] = device
    return layer_metrics(m, w, **kw)


def option_grid(kind):
    convs = ("unrolled", "rolled") if kind == "conv" else ("unrolled",)
    for conv, gate, imdb, narc in itertools.product(convs, ref.GATES, ref.GATES, ref.NARC_MODES):
        yield dict(conv=conv, gate=gate, imdb=imdb, narc=narc)


def describe(mask, weight, options):
    M = np.asarray(mask)
    where = np.argwhere(M != 0)
    text = f"mask shape {M.shape}, nnz {len(where)}, options {options}"
    if M.size <= 64:
        text += f"\nmask={M.astype(int).tolist()}"
    if weight is not None:
        text += f", weight dtype {np.asarray(weight).dtype}"
    return text


def check_case(mask, weight, options, **call):
    expected = ref.layer_metrics(mask, weight, **options)
    actual = masktopo_metrics(mask, weight, **options, **call)
    bad = ref.metric_mismatches(actual, expected, rtol=RTOL)
    assert not bad, describe(mask, weight, options) + "\n  " + "\n  ".join(bad)


def corpus():
    """Deterministic (id, mask, weight) cases: linear and conv, every structure, with and
    without float64/float32 weights."""
    cases = []
    for seed in range(6):
        for kind in ("linear", "conv"):
            for s_i, structure in enumerate(STRUCTURES):
                rng = np.random.default_rng([seed, s_i, int(kind == "conv")])
                density = float(rng.uniform(0.02, 0.5))
                M = random_mask(rng, kind, density, structure)
                dtype = (None, np.float64, np.float32)[seed % 3]
                W = None if dtype is None else random_weight(rng, M.shape, dtype)
                ident = (
                    f"{kind}-{structure}-s{seed}-d{density:.2f}-{'nw' if W is None else W.dtype}"
                )
                cases.append(pytest.param(M, W, id=ident))
    return cases


CORPUS = corpus()


@pytest.mark.parametrize(("mask", "weight"), CORPUS)
def test_layer_metrics_match_reference(mask, weight):
    kind = "linear" if mask.ndim == 2 else "conv"
    failures = []
    for options in option_grid(kind):
        try:
            check_case(mask, weight, options)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} option set(s) disagree:\n" + "\n".join(failures)


def test_corpus_exercises_every_branch():
    """The corpus must hit defined and undefined values of every metric (reference only), so
    that agreement above means something."""
    seen: dict[str, set] = {}
    for param in CORPUS:
        mask, weight = param.values
        kind = "linear" if mask.ndim == 2 else "conv"
        for options in option_grid(kind):
            result = ref.layer_metrics(mask, weight, **options)
            for key, flavour in (("ramanujan_gap", "gate"), ("imdb_ramanujan_gap", "imdb")):
                tag = f"{key}/{options[flavour]}/{options['conv']}"
                seen.setdefault(tag, set()).add("nan" if math.isnan(result[key]) else "num")
            for key, value in result.items():
                if key in ref.BOOL_KEYS:
                    seen.setdefault(key, set()).add(value)
                elif key not in ref.INT_KEYS:
                    seen.setdefault(key, set()).add("nan" if math.isnan(value) else "num")
    assert seen["is_ramanujan"] == {True, False, None}
    for key in ("ramanujan_gap", "imdb_ramanujan_gap"):
        for variant, conv in itertools.product(ref.GATES, ref.CONV_MODES):
            assert seen[f"{key}/{variant}/{conv}"] == {"nan", "num"}, (key, variant, conv)
    for key in ref.ALL_KEYS:
        if key in ref.BOOL_KEYS or key in ref.INT_KEYS:
            continue
        if key in ("density", "deg_out_mean", "deg_in_mean", "ramanujan_bound", "mu0"):
            assert "num" in seen[key], key
            continue
        if key in ("weighted_mu0", "full_spectrum_norm"):
            assert "num" in seen[key], key
            continue
        assert seen[key] == {"nan", "num"}, (key, seen[key])


def test_analyze_matches_reference():
    from masktopo import MaskSet
    from masktopo.analysis import analyze

    rng = np.random.default_rng(123)
    masks, weights, np_masks = {}, {}, {}
    for i, (kind, structure) in enumerate(
        [("conv", "plain"), ("conv", "isolated"), ("linear", "disconnected"), ("linear", "plain")]
    ):
        M = random_mask(rng, kind, 0.3, structure)
        W = random_weight(rng, M.shape, np.float64)
        name = f"layer{i}.weight"
        masks[name] = torch.as_tensor(M != 0)
        weights[name] = torch.as_tensor(W)
        np_masks[name] = (M, W)
    ms = MaskSet(masks, weights=weights)
    for conv in ("unrolled", "rolled"):
        df = analyze(ms, conv=conv, gate="n23", imdb="n23")
        assert list(df["layer"]) == list(masks)
        for _, row in df.iterrows():
            M, W = np_masks[row["layer"]]
            expected = ref.layer_metrics(M, W, conv, gate="n23", imdb="n23")
            actual = {k: row[k] for k in expected if k in row.index}
            # pandas stores ints in int64 columns and may turn None into NaN in bool columns
            if actual.get("is_ramanujan") is not None and not isinstance(
                actual["is_ramanujan"], bool | np.bool_
            ):
                actual["is_ramanujan"] = None
            for key in ref.INT_KEYS:
                if key in actual and isinstance(actual[key], float) and actual[key].is_integer():
                    actual[key] = int(actual[key])
            bad = ref.metric_mismatches(actual, expected, rtol=RTOL)
            assert not bad, f"{row['layer']} ({conv}): " + "; ".join(bad)


# --------------------------------------------------------------------------------------------
# property test
# --------------------------------------------------------------------------------------------


@st.composite
def layer_cases(draw):
    kind = draw(st.sampled_from(["linear", "conv"]))
    structure = draw(st.sampled_from(STRUCTURES))
    density = draw(st.floats(0.02, 0.5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    M = random_mask(rng, kind, density, structure)
    wdtype = draw(st.sampled_from([None, np.float64, np.float32]))
    W = None if wdtype is None else random_weight(rng, M.shape, wdtype)
    options = dict(
        conv=draw(st.sampled_from(ref.CONV_MODES)) if kind == "conv" else "unrolled",
        gate=draw(st.sampled_from(ref.GATES)),
        imdb=draw(st.sampled_from(ref.GATES)),
        narc=draw(st.sampled_from(ref.NARC_MODES)),
    )
    return M, W, options


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(layer_cases())
def test_property_layer_metrics_match_reference(case):
    mask, weight, options = case
    check_case(mask, weight, options)


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(("mask", "weight"), CORPUS[::3])
@pytest.mark.parametrize("placement", ["device_arg", "tensors_on_cuda"])
@pytest.mark.parametrize("route", ["auto", "batched"])  # small layers: auto is the CPU engine
def test_layer_metrics_match_reference_cuda(mask, weight, placement, route):
    kind = "linear" if mask.ndim == 2 else "conv"
    call = dict(device="cuda") if placement == "device_arg" else dict(on_device="cuda")
    call["route"] = route
    failures = []
    for options in option_grid(kind):
        try:
            check_case(mask, weight, options, **call)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} option set(s) disagree on CUDA:\n" + "\n".join(failures)


# The CUDA code path (the batched Gram route) on the CPU: what the CUDA tests check, on every
# machine (the routes of masktopo.analysis.spectral.solve_many).
@pytest.mark.parametrize(("mask", "weight"), CORPUS[::2])
def test_layer_metrics_match_reference_batched_route_on_cpu(mask, weight):
    kind = "linear" if mask.ndim == 2 else "conv"
    failures = []
    for options in option_grid(kind):
        try:
            check_case(mask, weight, options, route="batched")
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} option set(s) disagree:\n" + "\n".join(failures)
