"""Tests of masktopo.masks: the MaskSet value type and its helpers."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from masktopo import masks as masks_module
from masktopo.errors import MaskTopoError, MaskValidationError, UnknownNameError
from masktopo.masks import LayerInfo, MaskSet, check_name, infer_kind, to_bool_mask


def masks_and_weights(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"features.0.weight": (4, 3, 3, 3), "classifier.weight": (10, 7)}
    masks = {n: torch.rand(s, generator=g) < 0.3 for n, s in shapes.items()}
    weights = {n: torch.randn(s, generator=g) * masks[n] for n, s in shapes.items()}
    return masks, weights


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "kind"),
    [((3, 4), "linear"), ((3, 4, 5), "conv"), ((3, 4, 5, 5), "conv"), ((2, 2, 3, 3, 3), "conv")],
)
def test_infer_kind(shape, kind):
    assert infer_kind(shape) == kind


@pytest.mark.parametrize("shape", [(), (5,), (1, 1, 1, 1, 1, 1)])
def test_infer_kind_rejects_other_ranks(shape):
    with pytest.raises(MaskValidationError, match="neither linear"):
        infer_kind(shape)


@pytest.mark.parametrize("name", ["", " ", "a b", "a\tb", "a\nb", "x\x00", 3, None])
def test_check_name_rejects(name):
    with pytest.raises(MaskValidationError):
        check_name(name)


def test_check_name_accepts_dotted_names():
    assert check_name("layer1.0.conv1.weight") == "layer1.0.conv1.weight"
    assert check_name("módulo.peso") == "módulo.peso"


def test_to_bool_mask():
    for t in (torch.tensor([[0, 1], [1, 0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])):
        out = to_bool_mask("x", t)
        assert out.dtype == torch.bool and out.tolist() == [[False, True], [True, False]]
    b = torch.tensor([[True, False]])
    assert to_bool_mask("x", b) is b
    with pytest.raises(
        MaskValidationError, match=r"layer 'x': mask has values other than 0 and 1 \(e\.g\. 2"
    ):
        to_bool_mask("x", torch.tensor([[0, 2]]))
    with pytest.raises(MaskValidationError, match="NaN or inf"):
        to_bool_mask("x", torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(MaskValidationError, match="complex"):
        to_bool_mask("x", torch.ones(2, 2, dtype=torch.complex64))
    with pytest.raises(MaskValidationError, match="not a tensor"):
        to_bool_mask("x", [[0, 1]])


# ---------------------------------------------------------------------------------------------
# construction and validation
# ---------------------------------------------------------------------------------------------
def test_construction_and_description():
    masks, weights = masks_and_weights()
    ms = MaskSet(masks, weights=weights, meta={"source": "test"})
    assert ms.names == ["features.0.weight", "classifier.weight"]  # insertion order
    assert list(ms) == ms.names and len(ms) == 2
    assert ms.kind("features.0.weight") == "conv" and ms.kind("classifier.weight") == "linear"
    assert ms.shape("classifier.weight") == (10, 7)
    assert ms.layers() == [
        LayerInfo("features.0.weight", "conv", (4, 3, 3, 3)),
        LayerInfo("classifier.weight", "linear", (10, 7)),
    ]
    assert ms.layers()[0].numel == 108
    assert ms.has_weights and set(ms.weights) == set(masks)
    assert ms.meta == {"source": "test"}
    assert ms.device == torch.device("cpu")
    assert "2 layers" in repr(ms) and "with weights" in repr(ms)
    assert repr(MaskSet({})) == "MaskSet(0 layers)"


def test_mapping_protocol():
    masks, _ = masks_and_weights()
    ms = MaskSet(masks)
    assert "classifier.weight" in ms and "nope" not in ms and 3 not in ms
    assert ms.get("nope") is None and ms.get("nope", 5) == 5
    assert ms.get("classifier.weight") is masks["classifier.weight"]
    assert dict(ms.items()).keys() == masks.keys()
    with pytest.raises(
        UnknownNameError,
        match=re.escape("unknown layer 'nope'; known: classifier.weight, features.0.weight"),
    ):
        ms["nope"]
    with pytest.raises(UnknownNameError):
        ms.kind("nope")
    with pytest.raises(UnknownNameError):
        ms.nnz("nope")


@pytest.mark.parametrize(
    ("masks", "kwargs", "error", "message"),
    [
        (
            {"a": torch.ones(2, 2)},
            {},
            MaskValidationError,
            "dtype is torch.float32, expected torch.bool",
        ),
        ({"a": [[True]]}, {}, MaskValidationError, "not a tensor"),
        ({"a": torch.ones(0, 3, dtype=torch.bool)}, {}, MaskValidationError, "empty"),
        (
            {"a": torch.ones(3, dtype=torch.bool)},
            {},
            MaskValidationError,
            "layer 'a'.*neither linear",
        ),
        ({"a b": torch.ones(2, 2, dtype=torch.bool)}, {}, MaskValidationError, "whitespace"),
        ({"": torch.ones(2, 2, dtype=torch.bool)}, {}, MaskValidationError, "non-empty string"),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"kinds": {"a": "conv"}},
            MaskValidationError,
            "does not fit",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"kinds": {"a": "lstm"}},
            UnknownNameError,
            "unknown layer kind 'lstm'; known: conv, linear",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"kinds": {"b": "linear"}},
            MaskValidationError,
            "without masks",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"b": torch.ones(2, 2)}},
            MaskValidationError,
            r"missing \['a'\], without a mask \['b'\]",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"a": torch.ones(2, 3)}},
            MaskValidationError,
            r"weight shape \(2, 3\) does not match",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"a": torch.ones(2, 2, dtype=torch.int32)}},
            MaskValidationError,
            "not floating point",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"a": [[1.0]]}},
            MaskValidationError,
            "not a tensor",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"a": torch.tensor([[1.0, float("nan")], [float("inf"), 0.0]])}},
            MaskValidationError,
            "2 NaN/inf",
        ),
        (
            {"a": torch.ones(2, 2, dtype=torch.bool)},
            {"weights": {"a": torch.tensor([[1.0, float("-inf")], [0.0, 0.0]])}},
            MaskValidationError,
            "1 inf",
        ),
        ([torch.ones(2, 2, dtype=torch.bool)], {}, MaskValidationError, "must be a mapping"),
    ],
)
def test_validation_errors(masks, kwargs, error, message):
    with pytest.raises(error, match=message) as err:
        MaskSet(masks, **kwargs)
    assert isinstance(err.value, MaskTopoError)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # each failed deep inside (dict(), torch.as_tensor, .items()) or selected characters
        (lambda b: MaskSet({"a": b}, kinds="linear"), "kinds must be a mapping"),
        (lambda b: MaskSet({"a": b}, meta=["x"]), "meta must be a dict, not a list"),
        (lambda b: MaskSet({"a": b}, weights=[torch.ones(2, 2)]), "weights must be a mapping"),
        (
            lambda b: MaskSet.from_tensors({"a": None}),
            "layer 'a': mask is a NoneType, not a tensor",
        ),
        (lambda b: MaskSet.from_tensors({"a": "fc"}), "layer 'a': mask is a str, not a tensor"),
        (lambda b: MaskSet.from_tensors({"a": [[1, 0], [1]]}), "layer 'a': mask is a list"),
        (lambda b: MaskSet.from_tensors([b]), "masks must be a mapping"),
        (lambda b: MaskSet.from_tensors({1: b}), "layer name 1 is not a non-empty string"),
        (lambda b: MaskSet.from_weights(torch.ones(2, 2)), "weights must be a mapping"),
        (lambda b: MaskSet({"fc.weight": b}).select("fc.weight"), "a list of layer names"),
    ],
)
def test_bad_argument_types_are_one_line_errors(call, message):
    with pytest.raises(MaskValidationError, match=message) as err:
        call(torch.ones(2, 2, dtype=torch.bool))
    assert "\n" not in str(err.value)


def test_from_tensors_still_takes_arrays_and_lists():
    ms = MaskSet.from_tensors({"a": np.array([[1, 0], [0, 1]]), "b": [[1.0, 0.0, 1.0]] * 2})
    assert ms.nnz_per_layer() == {"a": 2, "b": 4} and ms["b"].dtype == torch.bool


def test_kinds_may_be_given():
    ms = MaskSet({"c": torch.ones(2, 2, 3, dtype=torch.bool)}, kinds={"c": "conv"})
    assert ms.kind("c") == "conv"


# ---------------------------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------------------------
def test_nnz_numel_density():
    masks, _ = masks_and_weights(seed=3)
    ms = MaskSet(masks)
    total_nnz = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert ms.nnz() == total_nnz and ms.numel() == total
    assert ms.density() == pytest.approx(total_nnz / total)
    for n, m in masks.items():
        assert ms.nnz(n) == int(np.count_nonzero(m.numpy()))
        assert ms.numel(n) == m.numel()
        assert ms.density(n) == pytest.approx(ms.nnz(n) / m.numel())
    assert ms.nnz_per_layer() == {n: ms.nnz(n) for n in masks}
    assert ms.densities() == pytest.approx({n: ms.density(n) for n in masks})
    assert list(ms.densities()) == ms.names
    # the global density weights layers by size, it is not the mean of layer densities
    assert ms.density() != pytest.approx(sum(ms.densities().values()) / len(ms))
    assert math.isnan(MaskSet({}).density()) and MaskSet({}).nnz() == 0


def test_all_zero_and_all_one_layers():
    ms = MaskSet(
        {"z": torch.zeros(3, 3, dtype=torch.bool), "o": torch.ones(2, 4, dtype=torch.bool)}
    )
    assert ms.nnz("z") == 0 and ms.density("z") == 0.0
    assert ms.density("o") == 1.0 and ms.density() == pytest.approx(8 / 17)


# ---------------------------------------------------------------------------------------------
# transformations
# ---------------------------------------------------------------------------------------------
def test_to_and_cpu():
    masks, weights = masks_and_weights()
    ms = MaskSet(masks, weights=weights, meta={"k": 1})
    moved = ms.to("meta")
    assert moved.device == torch.device("meta")
    assert all(w.device == torch.device("meta") for w in moved.weights.values())
    assert (
        moved.names == ms.names
        and moved.meta == ms.meta
        and moved.kind("classifier.weight") == "linear"
    )
    assert ms.device == torch.device("cpu")  # the original is unchanged
    back = ms.to(torch.device("cpu"))
    assert back == ms and back is not ms
    assert ms.cpu() == ms
    assert ms.without_weights().to("meta").weights is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_and_compare_across_devices():
    masks, weights = masks_and_weights()
    ms = MaskSet(masks, weights=weights)
    on_gpu = ms.to("cuda")
    assert on_gpu.device.type == "cuda"
    assert on_gpu == ms and on_gpu.nnz() == ms.nnz()
    assert on_gpu.cpu() == ms


def test_select():
    masks, weights = masks_and_weights()
    ms = MaskSet(masks, weights=weights, meta={"k": 1})
    sub = ms.select(["classifier.weight"])
    assert sub.names == ["classifier.weight"] and sub.has_weights and sub.meta == {"k": 1}
    assert torch.equal(sub["classifier.weight"], masks["classifier.weight"])
    rev = ms.select(reversed(ms.names))
    assert rev.names == list(reversed(ms.names))
    assert rev != ms and rev.select(ms.names) == ms
    with pytest.raises(UnknownNameError, match="unknown layer 'nope'"):
        ms.select(["nope"])


def test_with_and_without_weights():
    masks, weights = masks_and_weights()
    ms = MaskSet(masks)
    assert not ms.has_weights and ms.weights is None
    withw = ms.with_weights(weights)
    assert withw.has_weights and torch.equal(
        withw.weights["classifier.weight"], weights["classifier.weight"]
    )
    assert withw.without_weights() == ms
    assert withw.with_weights(None) == ms
    with pytest.raises(MaskValidationError, match="missing"):
        ms.with_weights({"classifier.weight": weights["classifier.weight"]})
    # the weights property returns a copy of the mapping
    withw.weights.clear()
    assert withw.has_weights and len(withw.weights) == 2


# ---------------------------------------------------------------------------------------------
# equality
# ---------------------------------------------------------------------------------------------
def test_equality():
    masks, weights = masks_and_weights()
    a = MaskSet(masks, weights=weights, meta={"x": 1})
    b = MaskSet(
        {n: m.clone() for n, m in masks.items()}, weights={n: w.clone() for n, w in weights.items()}
    )
    assert a == b and a.equal(b)  # meta is not compared
    assert a != MaskSet(masks)
    assert a.equal(MaskSet(masks), weights=False)
    flipped = {n: m.clone() for n, m in masks.items()}
    flipped["classifier.weight"][0, 0] ^= True
    assert a != MaskSet(flipped, weights=weights)
    other_w = {n: w.clone() for n, w in weights.items()}
    other_w["classifier.weight"][0, 0] += 1.0
    assert a != MaskSet(masks, weights=other_w)
    assert a.equal(MaskSet(masks, weights=other_w), weights=False)
    half = {n: w.half() for n, w in weights.items()}
    assert a != MaskSet(masks, weights=half)  # weight dtype counts
    reordered = {n: masks[n] for n in reversed(list(masks))}
    assert a.equal(MaskSet(reordered), weights=False) is False  # layer order counts
    assert a != {"classifier.weight": masks["classifier.weight"]}
    assert not a.equal(dict(masks))
    with pytest.raises(TypeError):
        hash(a)


# ---------------------------------------------------------------------------------------------
# alternative constructors
# ---------------------------------------------------------------------------------------------
def test_from_tensors():
    ms = MaskSet.from_tensors(
        {
            "np.weight": np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8),
            "float.weight": torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
            "bool.weight": torch.ones(2, 2, 1, 1, dtype=torch.bool),
        },
        meta={"m": 2},
    )
    assert ms.names == ["np.weight", "float.weight", "bool.weight"]
    assert ms.nnz_per_layer() == {"np.weight": 3, "float.weight": 3, "bool.weight": 4}
    assert all(ms[n].dtype == torch.bool for n in ms)
    assert ms.kind("bool.weight") == "conv" and ms.meta == {"m": 2}
    with pytest.raises(
        MaskValidationError, match="layer 'bad': mask has values other than 0 and 1"
    ):
        MaskSet.from_tensors({"bad": torch.tensor([[0.0, 0.5]])})
    with pytest.raises(MaskValidationError, match="NaN or inf"):
        MaskSet.from_tensors({"bad": np.array([[0.0, np.inf]])})


def test_from_weights():
    _, weights = masks_and_weights(seed=5)
    ms = MaskSet.from_weights(weights, meta={"src": "w"})
    for n, w in weights.items():
        assert torch.equal(ms[n], w != 0)
        assert torch.equal(ms.weights[n], w)
    assert ms.meta == {"src": "w"}
    with pytest.raises(MaskValidationError, match="not a floating-point tensor"):
        MaskSet.from_weights({"a": torch.ones(2, 2, dtype=torch.int64)})
    with pytest.raises(MaskValidationError, match="NaN"):
        MaskSet.from_weights({"a": torch.tensor([[1.0, float("nan")]])})
    with pytest.raises(MaskValidationError, match="whitespace"):
        MaskSet.from_weights({"a b": torch.ones(2, 2)})


# ---------------------------------------------------------------------------------------------
# weight values: one reduction in the common case, an exact elementwise scan otherwise
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def scans(monkeypatch):
    """The layer names the elementwise scan (the slow path of the finiteness check) ran for."""
    calls = []
    scan = masks_module._check_finite_elementwise

    def spy(name, weight):
        calls.append(name)
        return scan(name, weight)

    monkeypatch.setattr(masks_module, "_check_finite_elementwise", spy)
    return calls


WITH_INF = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e5m2]
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("dtype", WITH_INF)
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({(0, 1): NAN}, "1 NaN value(s)"),
        ({(0, 1): INF, (2, 0): INF}, "2 inf value(s)"),
        ({(1, 1): -INF}, "1 inf value(s)"),
        ({(0, 1): INF, (2, 3): -INF}, "2 inf value(s)"),  # the sum is NaN, the values are not
        ({(0, 0): NAN, (1, 0): INF, (2, 2): -INF}, "3 NaN/inf value(s)"),
    ],
)
def test_non_finite_weights_are_named_by_the_elementwise_scan(dtype, values, message, scans):
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for index, value in values.items():
        weight[index] = value
    weight = weight.to(dtype)
    with pytest.raises(MaskValidationError, match=re.escape(f"layer 'a': weight has {message}")):
        MaskSet({"a": torch.ones(3, 4, dtype=torch.bool)}, weights={"a": weight})
    assert scans == ["a"]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e8m0fnu])
def test_nan_in_float8_weights_without_inf(dtype, scans):
    # torch.isfinite is not implemented for e4m3fn and answers True for NaN in e8m0fnu
    weight = torch.tensor([[1.0, NAN, 2.0]]).to(dtype)
    with pytest.raises(MaskValidationError, match=re.escape("weight has 1 NaN value(s)")):
        MaskSet({"a": torch.ones(1, 3, dtype=torch.bool)}, weights={"a": weight})
    assert scans == ["a"]
    finite = torch.tensor([[1.0, 4.0, 2.0]]).to(dtype)
    assert MaskSet({"a": torch.ones(1, 3, dtype=torch.bool)}, weights={"a": finite}).has_weights
    assert scans == ["a"]  # the fast path decided


@pytest.mark.parametrize("dtype", [*WITH_INF, torch.float8_e4m3fn])
def test_finite_weights_take_the_fast_path(dtype, scans):
    masks, weights = masks_and_weights(seed=7)
    weights = {n: w.to(dtype) for n, w in weights.items()}
    ms = MaskSet(masks, weights=weights)
    assert ms.has_weights and scans == []
    # float16's largest values cannot overflow the float32 accumulator
    big = torch.full((50, 50), torch.finfo(torch.float16).max, dtype=torch.float16)
    MaskSet({"a": big != 0}, weights={"a": big})
    assert scans == []


@pytest.mark.parametrize(
    ("dtype", "value"), [(torch.float64, 1e308), (torch.float32, 3e38), (torch.bfloat16, 3e38)]
)
def test_finite_weights_whose_sum_overflows_are_accepted(dtype, value, scans):
    weight = torch.tensor([[value, value], [value, -1.0]], dtype=dtype)
    accumulator = torch.float64 if dtype == torch.float64 else torch.float32
    assert torch.isinf(weight.sum(dtype=accumulator))  # the fast path cannot decide
    ms = MaskSet({"a": torch.ones(2, 2, dtype=torch.bool)}, weights={"a": weight})
    assert torch.equal(ms.weights["a"], weight)
    assert scans == ["a"]


@pytest.mark.skipif(not hasattr(torch, "float4_e2m1fn_x2"), reason="no packed float4 dtype")
def test_weight_dtype_without_arithmetic_is_an_error():
    weight = torch.zeros(2, 3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    with pytest.raises(MaskValidationError, match=r"weight dtype .*float4.* is not supported"):
        MaskSet({"a": torch.ones(2, 3, dtype=torch.bool)}, weights={"a": weight})


def test_attached_positions_are_dropped_when_the_mask_changes():
    import numpy as np

    from masktopo.masks import attach_positions, known_positions

    m = torch.zeros(4, 5, dtype=torch.bool)
    m.view(-1)[torch.tensor([3, 7])] = True
    pos = np.array([3, 7])
    attach_positions(m, pos)
    assert known_positions(m) is pos
    assert known_positions(m.clone()) is None  # not copied with the tensor
    m[0, 0] = True  # in place: the note is stale now
    assert known_positions(m) is None
    assert known_positions(torch.ones(2, dtype=torch.bool)) is None
    from masktopo.masks import kept_positions

    assert np.array_equal(kept_positions(m), [0, 3, 7])  # stale note: the mask is scanned
    assert kept_positions(attach_positions(m, pos)) is pos  # (a wrong note is believed)
    assert kept_positions(torch.zeros(3, dtype=torch.bool)).dtype == np.int64
    from masktopo.masks import mask_from_positions

    built = mask_from_positions((4, 5), pos)
    assert torch.equal(built, torch.zeros(4, 5, dtype=torch.bool).index_put_(
        (torch.tensor([0, 1]), torch.tensor([3, 2])), torch.tensor(True)))  # fmt: skip
    assert known_positions(built) is pos and built.shape == (4, 5)


def test_scoring_with_and_without_attached_positions_agree():
    from masktopo import examples
    from masktopo.analysis.metrics import layer_metric_rows

    shapes = {"a.weight": (30, 40), "b.weight": (20, 30, 3, 3)}
    ms = examples.random_maskset(shapes, 0.2, distribution="erk", weights=True, seed=2)
    with_pos = layer_metric_rows([(n, ms[n], ms.weights[n]) for n in ms])
    plain = layer_metric_rows([(n, ms[n].clone(), ms.weights[n]) for n in ms])
    assert [r["weighted_mu_hat"] for r in with_pos] == [r["weighted_mu_hat"] for r in plain]
    assert [r["imdb_ramanujan_gap"] for r in with_pos] == [r["imdb_ramanujan_gap"] for r in plain]
